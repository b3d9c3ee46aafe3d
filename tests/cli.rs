//! Command-line behaviour of the `amqpprox` binary (docs/flags.md#flags):
//! `--help` (stdout, exit 1), unknown options (exit 1), incomplete simple mode
//! (exit 2), verbosity out of range (exit 3), a non-numeric port (non-zero,
//! names the flag), the `Starting amqpprox, ...` line at start and where
//! the shard threads are allowed to run (`--cpus`).
//!
//! It runs the binary as a child process with a private log directory and
//! control socket, kills it after a deadline so nothing hangs, and never
//! talks AMQP or the control protocol.

mod support;

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use support::proxy::ProxyProcess;

const FLAGS: &[&str] = &[
    "--help",
    "--logDirectory",
    "--controlSocket",
    "--listenPort",
    "--destinationPort",
    "--destinationDNS",
];

struct Outcome {
    /// `None` when the process had to be killed at the deadline.
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn both(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    fn describe(&self) -> String {
        format!(
            "exit code {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `amqpprox ARGS` with a private directory for logs and the control
/// socket (so a proxy that wrongly starts pollutes nothing), killing it after
/// 10 s.
fn run(args: &[&str]) -> Outcome {
    let dir = tempfile::Builder::new()
        .prefix("amqpprox-cli-")
        .tempdir()
        .expect("temporary directory");
    let mut command = Command::new(env!("CARGO_BIN_EXE_amqpprox"));
    command
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn amqpprox");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let err_reader = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let exited = support::poll_until(support::deadline_in(Duration::from_secs(10)), || {
        child.try_wait().expect("try_wait")
    });
    let code = match exited {
        Some(status) => status.code(),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            None
        }
    };
    Outcome {
        code,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Private `--logDirectory` and `--controlSocket` arguments.
fn private_paths() -> (tempfile::TempDir, Vec<String>) {
    let dir = tempfile::Builder::new()
        .prefix("amqpprox-cli-")
        .tempdir()
        .expect("temporary directory");
    let logs: PathBuf = dir.path().join("logs");
    let sock: PathBuf = dir.path().join("ctl.sock");
    let args = vec![
        "--logDirectory".to_string(),
        logs.display().to_string(),
        "--controlSocket".to_string(),
        sock.display().to_string(),
    ];
    (dir, args)
}

fn run_private(extra: &[&str]) -> Outcome {
    let (_dir, mut args) = private_paths();
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    run(&refs)
}

#[test]
fn help_prints_flags_to_stdout_and_exits_1() {
    let out = run(&["--help"]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    for flag in FLAGS {
        assert!(
            out.stdout.contains(flag),
            "help on stdout lacks {flag}: {}",
            out.describe()
        );
    }
}

#[test]
fn unknown_option_is_named_then_help_and_exit_1() {
    let out = run_private(&["--bogus"]);
    assert_eq!(out.code, Some(1), "{}", out.describe());
    let both = out.both();
    let at = both
        .find("Unknown command line option: --bogus")
        .unwrap_or_else(|| panic!("no unknown-option message: {}", out.describe()));
    assert!(
        both[at..].contains("--listenPort"),
        "the help must follow the message: {}",
        out.describe()
    );
}

#[test]
fn incomplete_simple_mode_exits_2() {
    let message = "If configuring in simple mode, the --listenPort, --destinationPort and --destinationDNS must all be set";
    let cases: &[&[&str]] = &[
        &["--listenPort", "5672"],
        &["--destinationPort", "5672"],
        &["--destinationDNS", "localhost"],
        &["--listenPort", "5672", "--destinationPort", "5673"],
        &["--listenPort", "5672", "--destinationDNS", "localhost"],
        &["--destinationPort", "5672", "--destinationDNS", "localhost"],
    ];
    for case in cases {
        let out = run_private(case);
        assert_eq!(out.code, Some(2), "{case:?}: {}", out.describe());
        assert!(out.both().contains(message), "{case:?}: {}", out.describe());
    }
}

#[test]
fn verbosity_above_5_exits_3() {
    for args in [&["-v", "6"][..], &["--consoleVerbosity", "9"][..]] {
        let out = run_private(args);
        assert_eq!(out.code, Some(3), "{args:?}: {}", out.describe());
        assert!(
            out.both()
                .contains("Console log verbosity must be between 0 and 5"),
            "{args:?}: {}",
            out.describe()
        );
    }
}

#[test]
fn non_numeric_port_exits_nonzero_naming_the_flag() {
    for (flag, args) in [
        (
            "listenPort",
            &[
                "--listenPort",
                "abc",
                "--destinationPort",
                "5672",
                "--destinationDNS",
                "localhost",
            ][..],
        ),
        (
            "destinationPort",
            &[
                "--listenPort",
                "5672",
                "--destinationPort",
                "x1",
                "--destinationDNS",
                "localhost",
            ][..],
        ),
    ] {
        let out = run_private(args);
        assert!(
            matches!(out.code, Some(code) if code != 0),
            "{args:?} must exit non-zero: {}",
            out.describe()
        );
        assert!(
            out.both().contains(flag),
            "{args:?}: the message must name {flag}: {}",
            out.describe()
        );
    }
}

#[test]
fn startup_prints_log_directory_and_control_socket() {
    let proxy = ProxyProcess::builder("127.0.0.1", 1).shards(1).start();
    let wanted = format!(
        "Starting amqpprox, logging to: '{}' control using: '{}'",
        proxy.log_dir.display(),
        proxy.control_socket.display()
    );
    let said = support::wait_until(support::deadline_in(Duration::from_secs(5)), || {
        proxy.stdout().contains(&wanted)
    });
    assert!(said, "stdout lacks {wanted:?}:\n{}", proxy.output());
}

/// The CPUs a thread may run on, from its `/proc` status file (whose
/// `Cpus_allowed_list` is written as `--cpus` takes it, `0,2-3`).
fn cpus_allowed(status: &str) -> Vec<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list in a status file");
    match amqpprox::cli::parse_cpus(list) {
        Ok(amqpprox::cli::CpuPlacement::List(cpus)) => cpus,
        other => panic!("Cpus_allowed_list {list:?}: {other:?}"),
    }
}

/// Each `shard-N` thread of `pid` and the CPUs it may run on.
fn shard_threads(pid: u32) -> Vec<(String, Vec<usize>)> {
    let mut shards: Vec<(String, Vec<usize>)> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("the proxy's threads")
        .filter_map(|task| {
            let path = task.ok()?.path();
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            let name = name.trim();
            // glommio names a shard's helper threads after it too; the
            // executor's own thread is the one named exactly `shard-N`.
            let index = name.strip_prefix("shard-")?;
            index.parse::<usize>().ok()?;
            let status = std::fs::read_to_string(path.join("status")).ok()?;
            Some((name.to_string(), cpus_allowed(&status)))
        })
        .collect();
    shards.sort();
    shards.dedup_by(|a, b| a.0 == b.0 && a.1 == b.1);
    shards
}

/// One shard per usable CPU: each pinned to its own CPU, in order. Fewer
/// shards than usable CPUs: none pinned (a container's quota, or
/// `--shards` below the cores). `--cpus none`: none pinned. The start-up
/// log says which.
#[test]
fn shards_are_pinned_one_per_cpu_and_left_free_when_fewer() {
    let usable = cpus_allowed(&std::fs::read_to_string("/proc/self/status").unwrap());
    let proxy = ProxyProcess::builder("127.0.0.1", 1)
        .shards(usable.len())
        .start();
    let wanted: Vec<String> = usable.iter().map(usize::to_string).collect();
    let line = format!("pinned to CPUs {}", wanted.join(","));
    assert!(
        proxy.log_contains_within(&line, Duration::from_secs(5)),
        "no {line:?} in the log:\n{}",
        proxy.log_files()
    );
    let mut seen = Vec::new();
    let pinned = support::wait_until(support::deadline_in(Duration::from_secs(5)), || {
        seen = shard_threads(proxy.pid());
        seen.len() == usable.len()
            && seen.iter().all(|(name, cpus)| {
                let index: usize = name["shard-".len()..].parse().unwrap();
                *cpus == [usable[index]]
            })
    });
    assert!(
        pinned,
        "one shard per CPU {usable:?}, each on its own: {seen:?}"
    );
    drop(proxy);

    if usable.len() >= 2 {
        assert_shards_unpinned(
            usable.len() - 1,
            &[],
            "unpinned: fewer shards than the",
            &usable,
        );
    }
    assert_shards_unpinned(
        usable.len(),
        &["--cpus", "none"],
        "unpinned (--cpus none)",
        &usable,
    );
}

/// Starts a proxy with `shards` shards and `args`, and checks that its log
/// `says` so and that every shard thread may run on every `usable` CPU.
fn assert_shards_unpinned(shards: usize, args: &[&str], says: &str, usable: &[usize]) {
    let proxy = args
        .iter()
        .fold(
            ProxyProcess::builder("127.0.0.1", 1).shards(shards),
            |b, a| b.arg(*a),
        )
        .start();
    assert!(
        proxy.log_contains_within(says, Duration::from_secs(5)),
        "no {says:?} in the log:\n{}",
        proxy.log_files()
    );
    let mut seen = Vec::new();
    let free = support::wait_until(support::deadline_in(Duration::from_secs(5)), || {
        seen = shard_threads(proxy.pid());
        !seen.is_empty() && seen.iter().all(|(_, cpus)| cpus == usable)
    });
    assert!(
        free,
        "{shards} shards with {args:?} must run on any of {usable:?}: {seen:?}"
    );
}

/// Without enough locked memory for io_uring, the proxy says so in one
/// line and exits 1, instead of crashing or hanging.
#[test]
fn low_memlock_limit_is_one_clear_message() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_amqpprox"));
    command
        .arg("--controlSocket")
        .arg(dir.path().join("control.sock"))
        .arg("--logDirectory")
        .arg(dir.path().join("logs"));
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        command.pre_exec(|| {
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &none) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = command.output().expect("run amqpprox");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("io_uring")).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].starts_with("FATAL: ") && lines[0].contains("ulimit -l"),
        "{stderr}"
    );
}
