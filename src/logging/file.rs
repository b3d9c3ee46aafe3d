//! The file sink: `<logDirectory>/amqpprox_<YYYYMMDD>_<NNNNN>.log`, a new file
//! at 32 MiB or when the UTC date changes, and the oldest files deleted while
//! the directory holds more than 1 GiB of them (docs/logging.md).
//!
//! Runs only on the log writer thread; never on a shard.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const ROTATE_AT: u64 = 32 * 1024 * 1024;
const KEEP_AT_MOST: u64 = 1024 * 1024 * 1024;

/// An append-only log file that rotates itself.
pub struct RotatingFile {
    directory: PathBuf,
    date: String,
    sequence: u32,
    written: u64,
    /// When the UTC day of `date` ends: the date is formatted again only
    /// then, not for every line.
    day_ends: SystemTime,
    file: std::io::BufWriter<File>,
}

/// Today's UTC date as in the file names, and when that day ends.
fn today() -> (String, SystemTime) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let next_midnight = (secs / 86_400 + 1) * 86_400;
    let date = chrono::DateTime::<chrono::Utc>::from(now)
        .format("%Y%m%d")
        .to_string();
    (date, UNIX_EPOCH + Duration::from_secs(next_midnight))
}

fn file_name(date: &str, sequence: u32) -> String {
    format!("amqpprox_{date}_{sequence:05}.log")
}

/// The next free sequence number for `date` in `directory`.
fn next_sequence(directory: &Path, date: &str) -> u32 {
    let prefix = format!("amqpprox_{date}_");
    fs::read_dir(directory)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix(&prefix)?
                .strip_suffix(".log")?
                .parse::<u32>()
                .ok()
        })
        .map(|n| n + 1)
        .max()
        .unwrap_or(0)
}

impl RotatingFile {
    /// Creates the directory if needed and opens a new file in it.
    pub fn open(directory: PathBuf) -> io::Result<RotatingFile> {
        fs::create_dir_all(&directory)?;
        let (date, day_ends) = today();
        let sequence = next_sequence(&directory, &date);
        let file = std::io::BufWriter::new(Self::create(&directory, &date, sequence)?);
        let mut this = RotatingFile {
            directory,
            date,
            sequence,
            written: 0,
            day_ends,
            file,
        };
        this.prune();
        Ok(this)
    }

    /// The path of the file being written.
    pub fn path(&self) -> PathBuf {
        self.directory.join(file_name(&self.date, self.sequence))
    }

    fn create(directory: &Path, date: &str, sequence: u32) -> io::Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(directory.join(file_name(date, sequence)))
    }

    /// Appends one line, rotating first when the file is full or the day changed.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if SystemTime::now() >= self.day_ends {
            let (date, day_ends) = today();
            self.day_ends = day_ends;
            if date != self.date {
                self.sequence = next_sequence(&self.directory, &date);
                self.date = date;
                self.reopen()?;
            }
        }
        if self.written + line.len() as u64 > ROTATE_AT {
            self.sequence += 1;
            self.reopen()?;
        }
        self.file.write_all(line)?;
        self.written += line.len() as u64;
        Ok(())
    }

    /// Closes the current file and starts the one `date` and `sequence` name.
    fn reopen(&mut self) -> io::Result<()> {
        self.file.flush()?;
        self.file =
            std::io::BufWriter::new(Self::create(&self.directory, &self.date, self.sequence)?);
        self.written = 0;
        self.prune();
        Ok(())
    }

    /// Writes out what is buffered (the writer does this after each batch).
    pub fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }

    /// Deletes the oldest log files while they add up to more than 1 GiB.
    fn prune(&mut self) {
        let current = self.path();
        let mut files: Vec<(PathBuf, u64)> = fs::read_dir(&self.directory)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("amqpprox_"))
            .filter_map(|e| Some((e.path(), e.metadata().ok()?.len())))
            .collect();
        // Names sort by date then sequence, so this is oldest first.
        files.sort();
        let mut total: u64 = files.iter().map(|(_, len)| len).sum();
        for (path, len) in files {
            if total <= KEEP_AT_MOST || path == current {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                total -= len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_rotates_to_the_next_sequence() {
        let dir = std::env::temp_dir().join(format!("amqpprox-rotate-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut log = RotatingFile::open(dir.clone()).unwrap();
        let first = log.path();
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..(ROTATE_AT / line.len() as u64) {
            log.write_line(&line).unwrap();
        }
        assert_eq!(log.path(), first, "exactly 32 MiB still fits");
        log.write_line(b"one more\n").unwrap();
        log.flush().unwrap();
        assert_ne!(log.path(), first);
        assert_eq!(fs::metadata(&first).unwrap().len(), ROTATE_AT);
        assert_eq!(fs::read(log.path()).unwrap(), b"one more\n");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn sequence_continues_after_existing_files() {
        let dir = std::env::temp_dir().join(format!("amqpprox-logtest-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = RotatingFile::open(dir.clone()).unwrap();
        let second = RotatingFile::open(dir.clone()).unwrap();
        assert_ne!(first.path(), second.path());
        let name = second
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            name.starts_with("amqpprox_") && name.ends_with("_00001.log"),
            "{name}"
        );
        let _ = fs::remove_dir_all(&dir);
    }
}
