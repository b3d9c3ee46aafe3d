//! Build script of the `amqpprox` package: records the git revision of the
//! checkout it is built from, for `amqpprox --version`.
//!
//! It only reads: it runs `git rev-parse` and sets `AMQPPROX_GIT_REVISION`
//! for the compiler. Without git, or outside a checkout (a source tarball, a
//! crate download), it sets nothing and the version line carries no revision;
//! it never fails the build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    if !output.status.success() {
        return None;
    }
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// A path `git rev-parse --git-path` names, relative to the package root
/// (where git runs) unless absolute. Worktrees keep HEAD in their own git
/// directory and branch refs in the shared one; this finds both.
fn git_path(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(git(&["rev-parse", "--git-path", name])?);
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    Some(if path.is_absolute() {
        path
    } else {
        manifest_dir.join(path)
    })
}

fn watch(path: &Path) {
    // Only files that exist: Cargo reruns the script on every build for a
    // missing one.
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let Some(revision) = git(&["rev-parse", "--short", "HEAD"]) else {
        return;
    };
    println!("cargo:rustc-env=AMQPPROX_GIT_REVISION={revision}");
    // HEAD moves on checkout; the branch's ref (loose or packed) on commit.
    if let Some(head) = git_path("HEAD") {
        watch(&head);
    }
    if let Some(branch) = git(&["rev-parse", "--symbolic-full-name", "HEAD"]) {
        if branch.starts_with("refs/") {
            if let Some(reference) = git_path(&branch) {
                watch(&reference);
            }
        }
    }
    if let Some(packed) = git_path("packed-refs") {
        watch(&packed);
    }
}
