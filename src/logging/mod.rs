//! Logging: the original's severities (0 FATAL .. 5 TRACE), line shapes and two
//! sinks, console (stderr) and a rotating file (docs/logging.md).
//!
//! Records are formatted on the thread that logs them and handed to one
//! writer thread through a bounded queue; when the queue is full the record
//! is dropped and counted, so logging never blocks a shard. Levels change at
//! run time (`LOG CONSOLE|FILE n`) through atomics. This module never sees
//! credentials: callers must not log them, and the codec's `Debug` redacts
//! SASL responses.

mod file;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};

pub use file::RotatingFile;

/// The target that marks a record as FATAL (the `log` crate has no such level).
pub const FATAL_TARGET: &str = "amqpprox::fatal";

/// Log a FATAL record: reaches the console even at verbosity 0.
#[macro_export]
macro_rules! fatal {
    ($($arg:tt)+) => { ::log::error!(target: $crate::logging::FATAL_TARGET, $($arg)+) };
}

/// Severity numbers as operators know them.
pub fn severity(record: &log::Record<'_>) -> u8 {
    if record.target() == FATAL_TARGET {
        return 0;
    }
    match record.level() {
        log::Level::Error => 1,
        log::Level::Warn => 2,
        log::Level::Info => 3,
        log::Level::Debug => 4,
        log::Level::Trace => 5,
    }
}

fn severity_name(sev: u8) -> &'static str {
    ["FATAL", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"][usize::from(sev.min(5))]
}

/// Shared state of the logger: levels, drop counter, queue.
pub struct LogControl {
    console: AtomicU8,
    file: AtomicU8,
    dropped: AtomicU64,
    line_id: AtomicU64,
    tx: flume::Sender<Line>,
}

enum Line {
    Console(String),
    File(String),
    Flush(flume::Sender<()>),
}

impl LogControl {
    /// Sets the console verbosity (0..=5).
    pub fn set_console(&self, v: u8) {
        self.console.store(v.min(5), Ordering::Relaxed);
        self.update_max();
    }
    /// Sets the file verbosity (0..=5).
    pub fn set_file(&self, v: u8) {
        self.file.store(v.min(5), Ordering::Relaxed);
        self.update_max();
    }
    pub fn console(&self) -> u8 {
        self.console.load(Ordering::Relaxed)
    }
    pub fn file(&self) -> u8 {
        self.file.load(Ordering::Relaxed)
    }
    /// Records dropped because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
    /// Waits (up to a second) until every record queued so far is written.
    pub fn flush(&self) {
        let (tx, rx) = flume::bounded(1);
        if self.tx.send(Line::Flush(tx)).is_ok() {
            let _ = rx.recv_timeout(std::time::Duration::from_secs(1));
        }
    }
    fn update_max(&self) {
        let max = self.console().max(self.file());
        log::set_max_level(match max {
            0 | 1 => log::LevelFilter::Error,
            2 => log::LevelFilter::Warn,
            3 => log::LevelFilter::Info,
            4 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        });
    }
    fn send(&self, line: Line) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

static CONTROL: OnceLock<Arc<LogControl>> = OnceLock::new();

/// The running logger's controls, once [`init`] has run.
pub fn control() -> Option<&'static Arc<LogControl>> {
    CONTROL.get()
}

struct Logger {
    control: Arc<LogControl>,
    pid: u32,
}

/// Collects the `vhost` and `conn` key-values a session attaches, borrowed
/// from the record: nothing is copied until the line is written.
#[derive(Default)]
struct Context<'kvs> {
    vhost: Option<log::kv::Value<'kvs>>,
    conn: Option<log::kv::Value<'kvs>>,
}

impl<'kvs> log::kv::VisitSource<'kvs> for Context<'kvs> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        match key.as_str() {
            "vhost" => self.vhost = Some(value),
            "conn" => self.conn = Some(value),
            _ => {}
        }
        Ok(())
    }
}

/// `<SEV>[ [<vhost>]][ <connId>]: <message>`
fn format_body(out: &mut String, sev: u8, record: &log::Record<'_>) {
    let mut ctx = Context::default();
    let _ = record.key_values().visit(&mut ctx);
    out.push_str(severity_name(sev));
    if let Some(v) = ctx.vhost {
        // An empty vhost (not known yet) shows no brackets.
        let start = out.len();
        match v.to_borrowed_str() {
            Some(vhost) => {
                out.push_str(" [");
                out.push_str(vhost);
                out.push(']');
            }
            None => {
                let _ = write!(out, " [{v}]");
            }
        }
        if out.len() == start + 3 {
            out.truncate(start);
        }
    }
    if let Some(c) = ctx.conn {
        match c.to_u64() {
            Some(id) => {
                out.push(' ');
                out.push_str(itoa::Buffer::new().format(id));
            }
            None => {
                let _ = write!(out, " {c}");
            }
        }
    }
    let _ = write!(out, ": {}", record.args());
}

/// What a file line carries before its body: `<UTC time> <line> <pid>-<tid> `
/// (docs/logging.md). The integers go through `itoa`: two lines per
/// connection come here, and the formatting machinery costs more.
fn push_file_header(
    out: &mut String,
    now: std::time::SystemTime,
    line_id: u64,
    pid: u32,
    tid: u64,
) {
    push_timestamp(out, now);
    let mut digits = itoa::Buffer::new();
    out.push(' ');
    out.push_str(digits.format(line_id));
    out.push(' ');
    out.push_str(digits.format(pid));
    out.push('-');
    out.push_str(digits.format(tid));
    out.push(' ');
}

/// The file line's timestamp, `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC. The
/// part up to the seconds is formatted once per second and thread; each
/// line then adds only its microseconds.
fn push_timestamp(out: &mut String, now: std::time::SystemTime) {
    thread_local! {
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let since = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            cached.1.clear();
            let when = chrono::DateTime::<chrono::Utc>::from(now);
            let _ = write!(cached.1, "{}", when.format("%Y-%m-%dT%H:%M:%S"));
            cached.0 = secs;
        }
        out.push_str(&cached.1);
    });
    let mut digits = itoa::Buffer::new();
    let micros = digits.format(since.subsec_micros());
    out.push('.');
    for _ in micros.len()..6 {
        out.push('0');
    }
    out.push_str(micros);
    out.push('Z');
}

fn thread_id() -> u64 {
    thread_local! {
        // SAFETY: gettid has no preconditions. Asked once per thread.
        static TID: u64 = unsafe { libc::syscall(libc::SYS_gettid) as u64 };
    }
    TID.with(|t| *t)
}

impl log::Log for Logger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        // Dependencies' own records (glommio, lapin in tests) stay out unless tracing.
        if !record.target().starts_with("amqpprox") && record.level() > log::Level::Warn {
            return;
        }
        let sev = severity(record);
        let to_console = sev <= self.control.console();
        let to_file = sev <= self.control.file();
        if !to_console && !to_file {
            return;
        }
        // One buffer per record: the file line is the console line behind
        // a header, so the console's copy is cut from it when both want it.
        // Sized for a session's "Starting connection" line with its file
        // header (about 190 bytes), so it is written without a regrowth.
        let mut line = String::with_capacity(256);
        if to_file {
            let line_id = self.control.line_id.fetch_add(1, Ordering::Relaxed) + 1;
            push_file_header(
                &mut line,
                std::time::SystemTime::now(),
                line_id,
                self.pid,
                thread_id(),
            );
        }
        let body_at = line.len();
        format_body(&mut line, sev, record);
        line.push('\n');
        if to_console && to_file {
            self.control.send(Line::Console(line[body_at..].to_owned()));
        }
        if to_file {
            self.control.send(Line::File(line));
        } else {
            self.control.send(Line::Console(line));
        }
    }

    fn flush(&self) {
        self.control.flush();
    }
}

/// Installs the global logger with the given console verbosity and the file
/// sink in `directory` at INFO (the original's default). A directory that
/// cannot be created leaves the console sink working and says why.
pub fn init(console: u8, directory: PathBuf) -> Arc<LogControl> {
    let (tx, rx) = flume::bounded::<Line>(4096);
    let control = Arc::new(LogControl {
        console: AtomicU8::new(console.min(5)),
        file: AtomicU8::new(3),
        dropped: AtomicU64::new(0),
        line_id: AtomicU64::new(0),
        tx,
    });
    let file = match RotatingFile::open(directory.clone()) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("amqpprox: cannot log to '{}': {e}", directory.display());
            None
        }
    };
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || writer(rx, file))
        .expect("spawning the log writer thread");
    let logger = Logger {
        control: control.clone(),
        pid: std::process::id(),
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        control.update_max();
        let _ = CONTROL.set(control.clone());
    }
    control
}

/// How long the writer sleeps when the queue is empty. Polling instead of
/// blocking on the queue means a shard that logs never has to wake this
/// thread (a futex call per record); records reach their sink within this
/// delay, and in batches.
const WRITER_IDLE: std::time::Duration = std::time::Duration::from_millis(10);

/// Empty polls in a row after which the writer blocks on the queue instead:
/// an idle proxy then has no writer wake-ups at all, and only the first
/// record after a quiet second pays for waking it.
const POLLS_BEFORE_BLOCKING: u32 = 100;

fn writer(rx: flume::Receiver<Line>, mut file: Option<RotatingFile>) {
    let stderr = std::io::stderr();
    let mut console = String::new();
    let mut flushes = Vec::new();
    let mut empty_polls = 0u32;
    loop {
        let mut disconnected = false;
        let mut received = false;
        loop {
            let next = if empty_polls >= POLLS_BEFORE_BLOCKING && !received {
                rx.recv().map_err(|_| flume::TryRecvError::Disconnected)
            } else {
                rx.try_recv()
            };
            match next {
                Ok(line) => {
                    received = true;
                    match line {
                        Line::Console(s) => console.push_str(&s),
                        Line::File(s) => {
                            if let Some(f) = file.as_mut() {
                                if let Err(e) = f.write_line(s.as_bytes()) {
                                    console.push_str(&format!(
                                        "amqpprox: log file write failed: {e}\n"
                                    ));
                                }
                            }
                        }
                        Line::Flush(done) => flushes.push(done),
                    }
                }
                Err(flume::TryRecvError::Empty) => break,
                Err(flume::TryRecvError::Disconnected) => {
                    disconnected = true;
                    break;
                }
            }
        }
        empty_polls = if received { 0 } else { empty_polls + 1 };
        if !console.is_empty() {
            let _ = stderr.lock().write_all(console.as_bytes());
            console.clear();
        }
        if received {
            if let Some(f) = file.as_mut() {
                let _ = f.flush();
            }
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        if disconnected {
            return;
        }
        std::thread::sleep(WRITER_IDLE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body a session's record gets, with its vhost and connection id.
    fn session_body(level: log::Level, vhost: &str, conn: u64, message: &str) -> String {
        let mut out = String::new();
        let kvs: [(&str, log::kv::Value<'_>); 2] = [("vhost", vhost.into()), ("conn", conn.into())];
        let args = format_args!("{message}");
        let record = log::Record::builder()
            .level(level)
            .target("amqpprox::session")
            .args(args)
            .key_values(&kvs)
            .build();
        format_body(&mut out, severity(&record), &record);
        out
    }

    #[test]
    fn body_carries_vhost_and_connection_id() {
        assert_eq!(
            session_body(log::Level::Info, "prod", 42, "Starting connection"),
            "INFO [prod] 42: Starting connection"
        );
    }

    #[test]
    fn an_empty_vhost_shows_no_brackets() {
        assert_eq!(
            session_body(log::Level::Debug, "", 7, "Accepted"),
            "DEBUG 7: Accepted"
        );
    }

    #[test]
    fn a_file_line_header_is_time_line_and_process_thread() {
        use std::time::{Duration, UNIX_EPOCH};
        let at = UNIX_EPOCH + Duration::from_secs(1_796_481_473) + Duration::from_micros(42);
        let mut out = String::new();
        push_file_header(&mut out, at, 1, 4_194_304, 18_446_744_073_709_551_615);
        assert_eq!(
            out,
            "2026-12-05T14:37:53.000042Z 1 4194304-18446744073709551615 "
        );
        out.clear();
        push_file_header(&mut out, at, 907, 0, 12);
        assert_eq!(out, "2026-12-05T14:37:53.000042Z 907 0-12 ");
    }

    #[test]
    fn timestamps_carry_microseconds_and_follow_the_second() {
        use std::time::{Duration, UNIX_EPOCH};
        // 2026-12-05T14:37:53Z
        let second = UNIX_EPOCH + Duration::from_secs(1_796_481_473);
        let mut out = String::new();
        push_timestamp(&mut out, second + Duration::from_micros(123_456));
        assert_eq!(out, "2026-12-05T14:37:53.123456Z");
        out.clear();
        push_timestamp(&mut out, second + Duration::from_micros(7));
        assert_eq!(out, "2026-12-05T14:37:53.000007Z");
        out.clear();
        // The next second, and the next day, are formatted afresh.
        push_timestamp(&mut out, second + Duration::from_secs(1));
        assert_eq!(out, "2026-12-05T14:37:54.000000Z");
        out.clear();
        push_timestamp(&mut out, second + Duration::from_secs(86_400));
        assert_eq!(out, "2026-12-06T14:37:53.000000Z");
    }

    #[test]
    fn fatal_target_is_severity_zero() {
        let args = format_args!("x");
        let record = log::Record::builder()
            .level(log::Level::Error)
            .target(FATAL_TARGET)
            .args(args)
            .build();
        let mut out = String::new();
        format_body(&mut out, severity(&record), &record);
        assert_eq!(out, "FATAL: x");
    }
}
