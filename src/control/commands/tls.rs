//! `TLS (INGRESS | EGRESS) (KEY_FILE file | RSA_KEY_FILE file |
//! CERT_CHAIN_FILE file | CA_CERT_FILE file | TMP_DH_FILE file |
//! VERIFY_MODE mode* | CIPHERS (PRINT | SET list))` (behaviour.md §2.16,
//! DECISIONS Keep 2, Fix 9, Fix 12). Owns the grammar and the texts; the
//! settings and what they build are `crate::tls`.
//!
//! The original's texts: `Direction must be INGRESS or EGRESS`, `File must
//! be specified`, `Unknown mode: <MODE>`, `Ciphers:` and `Updated cipher
//! list:` with one name a line, `Failed to set cipher suite. ` before a
//! refused list. A file that cannot be read or parsed answers `Error:
//! <category>:<value> (...)` and changes nothing. Differences: verbs and
//! `PRINT`/`SET` in any case; an unknown command is an error (the original
//! ignored it); `TMP_DH_FILE` checks the file and says it has no effect
//! (rustls picks (EC)DHE groups itself); a change that leaves a side
//! unusable (a key that does not match the new chain mid-rotation,
//! `VERIFY_MODE PEER` before its CA) says that the previous settings stay
//! in force until it is complete. Reads files on the control thread; never
//! touches a shard or a session.

use crate::control::{ControlState, Reply};
use crate::tls::files::KeyKind;
use crate::tls::{ciphers, Direction, NotReady, Side, VerifyFlags};
use std::path::Path;

pub fn run(state: &mut ControlState, args: &[&str]) -> Reply {
    let Some(side) = args.first().and_then(|d| Side::parse(d)) else {
        return Reply::error("Direction must be INGRESS or EGRESS\n");
    };
    let command = args
        .get(1)
        .map(|c| c.to_ascii_uppercase())
        .unwrap_or_default();
    let rest = args.get(2..).unwrap_or_default();
    let mut draft = state.tls.side(side).clone();
    let loaded = match command.as_str() {
        "VERIFY_MODE" => match verify_flags(rest) {
            Ok(flags) => {
                draft.verify = flags;
                Ok(String::new())
            }
            Err(reply) => return reply,
        },
        "CIPHERS" => return ciphers_command(state, side, draft, rest),
        "KEY_FILE" | "RSA_KEY_FILE" | "CERT_CHAIN_FILE" | "CA_CERT_FILE" | "TMP_DH_FILE" | "" => {
            let Some(file) = rest.first() else {
                return Reply::error("File must be specified\n");
            };
            load_file(&mut draft, &command, Path::new(file))
        }
        other => return Reply::error(format!("Unknown TLS command: {other}\n")),
    };
    match loaded {
        Err(error) => Reply::error(format!("{error}\n")),
        Ok(text) => Reply::ok(text + &commit(state, side, draft)),
    }
}

/// Reads one file into the draft; the text is the success reply.
fn load_file(
    draft: &mut Direction,
    command: &str,
    file: &Path,
) -> Result<String, crate::tls::files::FileError> {
    match command {
        "KEY_FILE" => draft.set_key(file, KeyKind::Any)?,
        "RSA_KEY_FILE" => draft.set_key(file, KeyKind::Rsa)?,
        "CERT_CHAIN_FILE" => draft.set_chain(file)?,
        "CA_CERT_FILE" => draft.set_ca(file)?,
        _ => {
            draft.set_dh(file)?;
            return Ok(
                "TMP_DH_FILE has no effect with rustls, which chooses the (EC)DHE groups \
                       itself; the file was checked and is not used.\n"
                    .into(),
            );
        }
    }
    Ok(String::new())
}

/// `PEER`, `NONE`, `FAIL_IF_NO_PEER_CERT`, `CLIENT_ONCE`, any case; none
/// given is `NONE`. One unknown mode and nothing is applied.
fn verify_flags(modes: &[&str]) -> Result<VerifyFlags, Reply> {
    let mut flags = VerifyFlags::default();
    for mode in modes {
        match mode.to_ascii_uppercase().as_str() {
            "PEER" => flags.peer = true,
            "NONE" => {}
            "FAIL_IF_NO_PEER_CERT" => flags.fail_if_no_peer_cert = true,
            "CLIENT_ONCE" => flags.client_once = true,
            other => return Err(Reply::error(format!("Unknown mode: {other}\n"))),
        }
    }
    Ok(flags)
}

fn cipher_lines(d: &Direction) -> String {
    d.ciphers()
        .into_iter()
        .map(|s| ciphers::openssl_name(s) + "\n")
        .collect()
}

fn ciphers_command(
    state: &mut ControlState,
    side: Side,
    mut draft: Direction,
    rest: &[&str],
) -> Reply {
    match rest.first().map(|s| s.to_ascii_uppercase()).as_deref() {
        Some("PRINT") => Reply::ok(format!("Ciphers:\n{}", cipher_lines(&draft))),
        Some("SET") => match ciphers::parse_list(&rest[1..].join(":")) {
            Ok(suites) => {
                draft.set_ciphers(suites);
                let lines = cipher_lines(&draft);
                let note = commit(state, side, draft);
                Reply::ok(format!("Updated cipher list:\n{lines}{note}"))
            }
            Err(e) => Reply::error(format!(
                "Failed to set cipher suite. {e}.\nUpdated cipher list:\n{}",
                cipher_lines(&draft)
            )),
        },
        _ => Reply::error("CIPHERS needs PRINT or SET followed by a cipher list\n"),
    }
}

/// Keeps the draft and puts what it builds in force; the text tells the
/// operator when the previous settings stay in force instead.
fn commit(state: &mut ControlState, side: Side, draft: Direction) -> String {
    *state.tls.side_mut(side) = draft;
    let in_force = match side {
        Side::Ingress => state.shared.tls.load().ingress.is_some(),
        Side::Egress => true,
    };
    match state.tls.publish(side, &state.shared.tls) {
        Ok(()) => String::new(),
        // Mid-setup with nothing in force yet: nothing to warn about.
        Err(NotReady::Incomplete(_)) if !in_force => String::new(),
        Err(e) => format!(
            "TLS {} changes are not in force yet: {}. New connections keep the previous \
             settings until they are complete.\n",
            side.name(),
            e.reason()
        ),
    }
}
