//! `--version` of both binaries: `amqpprox --version` prints the package
//! version and, built from a git checkout, the checkout's short revision;
//! `amqpprox_ctl --version` prints its version. Both exit 0 and start nothing.
//!
//! It runs the built binaries as child processes with a deadline and never
//! starts a proxy or talks to one.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `binary --version` in a fresh directory (so a binary that wrongly
/// starts leaves nothing behind), killing it after 10 s.
fn version_of(binary: &Path) -> Output {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut child = Command::new(binary)
        .arg("--version")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} --version still running after 10 s", binary.display());
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// The short revision of this checkout, if git and a checkout are there.
fn checkout_revision() -> Option<String> {
    let output = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    let revision = String::from_utf8(output.stdout).ok()?.trim().to_string();
    (output.status.success() && !revision.is_empty()).then_some(revision)
}

#[test]
fn amqpprox_version_names_the_package_version_and_git_revision() {
    let output = version_of(Path::new(env!("CARGO_BIN_EXE_amqpprox")));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let expected = match checkout_revision() {
        Some(revision) => format!("amqpprox {} (git {revision})\n", env!("CARGO_PKG_VERSION")),
        None => format!("amqpprox {}\n", env!("CARGO_PKG_VERSION")),
    };
    assert_eq!(stdout, expected, "{output:?}");
    assert!(output.stderr.is_empty(), "{output:?}");
}

#[test]
fn amqpprox_ctl_version_names_the_package_version() {
    let output = version_of(&support::control::ctl_binary());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        stdout,
        format!("amqpprox_ctl {}\n", env!("CARGO_PKG_VERSION")),
        "{output:?}"
    );
}
