//! `cargo xtask dist-assets [DIR]`: writes the man pages and shell
//! completions of both binaries into DIR (default `target/dist-assets`), for
//! the Debian package (`ci/deb.sh`) and anyone packaging by hand.
//!
//! Generated from the clap definitions, never written by hand:
//! `amqpprox::cli::command()` for the proxy. `amqpprox_ctl` parses its
//! arguments without clap (it is std only), so its clap description lives
//! here, next to the one place that needs it, with the control commands'
//! `HELP` text from the library as its command list. This crate never runs
//! the proxy and is never part of a release binary.

use clap::{Arg, ArgAction, Command};
use clap_complete::Shell;
use std::path::{Path, PathBuf};

/// Why the assets could not be written.
#[derive(Debug, thiserror::Error)]
enum XtaskError {
    #[error("usage: cargo xtask dist-assets [DIR]")]
    Usage,
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// `amqpprox_ctl`'s command line, as `control/src/main.rs` parses it.
fn ctl_command() -> Command {
    Command::new("amqpprox_ctl")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Send one control command to a running amqpprox and print its reply")
        .long_about(format!(
            "Joins ARGS with spaces, sends them as one line over the proxy's control socket \
             (amqpprox --controlSocket) and copies the reply to standard output until the \
             proxy closes the connection.\n\nExit status: 0 on success, 1 for a usage error, \
             2 when the proxy cannot be reached, 3 when the proxy's reply is an error.\n\n\
             The commands (send HELP for this list):\n\n{}",
            // One paragraph per command: man fills a paragraph's lines.
            amqpprox::control::commands::HELP
                .lines()
                .collect::<Vec<_>>()
                .join("\n\n")
        ))
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(
            Arg::new("version")
                .long("version")
                .action(ArgAction::SetTrue)
                .exclusive(true)
                .help("Print the version and exit"),
        )
        .arg(
            Arg::new("control_socket")
                .required_unless_present("version")
                .value_hint(clap::ValueHint::FilePath)
                .help("The proxy's control socket (its --controlSocket)"),
        )
        .arg(
            Arg::new("args")
                .required_unless_present("version")
                .num_args(1..)
                .action(ArgAction::Append)
                .help("The command and its arguments, e.g. BACKEND PRINT"),
        )
}

/// The proxy's command line, with a short NAME line for the man page (the
/// `--help` text's paragraph becomes the DESCRIPTION).
fn proxy_command() -> Command {
    let command = amqpprox::cli::command();
    let description = command
        .get_about()
        .map(|a| a.to_string())
        .unwrap_or_default();
    command
        .version(env!("CARGO_PKG_VERSION"))
        .about("AMQP 0.9.1 proxy for RabbitMQ")
        .long_about(description)
}

/// Sections clap does not describe, in roff, after OPTIONS.
fn extra_sections(name: &str) -> &'static str {
    match name {
        "amqpprox" => concat!(
            ".SH SIGNALS\n",
            ".TP\n\\fBSIGTERM\\fR, \\fBSIGINT\\fR\n",
            "Drain: stop accepting, ask every client to reconnect (Connection.Close 320), ",
            "exit once they have gone or after \\-\\-drainTimeoutMs.\n",
            ".TP\n\\fBSIGHUP\\fR\n",
            "Re\\-read the TLS key material and re\\-apply the \\-\\-config file.\n",
            ".SH FILES\n",
            ".TP\n\\fI/etc/amqpprox/amqpprox.conf\\fR\n",
            "Control commands applied at start (\\-\\-config), one a line, as ",
            "\\fBamqpprox_ctl\\fR SOCKET CONFIG DUMP prints them.\n",
            ".TP\n\\fI/usr/lib/systemd/system/amqpprox.service\\fR\n",
            "The systemd unit (Type=notify); its control socket is /run/amqpprox/control.\n",
            ".SH SEE ALSO\n",
            "\\fBamqpprox_ctl\\fR(1)\n",
        ),
        _ => concat!(".SH SEE ALSO\n", "\\fBamqpprox\\fR(1)\n"),
    }
}

/// Both binaries' commands, named as installed.
fn commands() -> Vec<Command> {
    vec![proxy_command(), ctl_command()]
}

fn write(path: PathBuf, bytes: &[u8]) -> Result<(), XtaskError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|error| XtaskError::Write {
            path: dir.to_path_buf(),
            error,
        })?;
    }
    std::fs::write(&path, bytes).map_err(|error| XtaskError::Write { path, error })
}

/// Writes `man/<name>.1` and `completions/<name>.<shell>` for each binary.
fn dist_assets(out: &Path) -> Result<Vec<PathBuf>, XtaskError> {
    let mut written = Vec::new();
    for mut command in commands() {
        let name = command.get_name().to_string();
        let mut page = Vec::new();
        let man = clap_mangen::Man::new(command.clone());
        man.render_title(&mut page)
            .and_then(|()| man.render_name_section(&mut page))
            .and_then(|()| man.render_synopsis_section(&mut page))
            .and_then(|()| man.render_description_section(&mut page))
            .and_then(|()| man.render_options_section(&mut page))
            .expect("rendering into a Vec cannot fail");
        page.extend_from_slice(extra_sections(&name).as_bytes());
        man.render_version_section(&mut page)
            .expect("rendering into a Vec cannot fail");
        let path = out.join("man").join(format!("{name}.1"));
        write(path.clone(), &page)?;
        written.push(path);
        for (shell, file) in [
            (Shell::Bash, name.clone()),
            (Shell::Zsh, format!("_{name}")),
            (Shell::Fish, format!("{name}.fish")),
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, name.clone(), &mut script);
            let path = out.join("completions").join(shell.to_string()).join(file);
            write(path.clone(), &script)?;
            written.push(path);
        }
    }
    Ok(written)
}

fn run(args: &[String]) -> Result<(), XtaskError> {
    match args {
        [task] if task == "dist-assets" => dist_assets(Path::new("target/dist-assets")),
        [task, dir] if task == "dist-assets" => dist_assets(Path::new(dir)),
        _ => Err(XtaskError::Usage),
    }
    .map(|written| {
        for path in written {
            println!("{}", path.display());
        }
    })
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_man_pages_and_completions_for_both_binaries() {
        let dir = std::env::temp_dir().join(format!("xtask-test-{}", std::process::id()));
        let written = dist_assets(&dir).unwrap();
        assert_eq!(written.len(), 8);
        let proxy_page = std::fs::read_to_string(dir.join("man/amqpprox.1")).unwrap();
        assert!(proxy_page.contains(".TH amqpprox 1"), "{proxy_page}");
        assert!(proxy_page.contains("controlSocket"));
        assert!(proxy_page.contains(".SH SIGNALS"));
        let ctl_page = std::fs::read_to_string(dir.join("man/amqpprox_ctl.1")).unwrap();
        assert!(
            ctl_page.contains("BACKEND"),
            "the command list is in the page"
        );
        let bash = std::fs::read_to_string(dir.join("completions/bash/amqpprox")).unwrap();
        assert!(bash.contains("--destinationDNS"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ctl_command_is_consistent() {
        ctl_command().debug_assert();
        amqpprox::cli::command().debug_assert();
    }
}
