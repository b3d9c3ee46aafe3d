//! `TLS (INGRESS | EGRESS) (KEY_FILE file | RSA_KEY_FILE file |
//! CERT_CHAIN_FILE file | CA_CERT_FILE file | TMP_DH_FILE file |
//! VERIFY_MODE mode* | CIPHERS (PRINT | SET list))`, executed (see
//! `docs/tls-and-proxy-protocol.md`). Owns the texts; the grammar is
//! `control::grammar`, the settings and what they build are `crate::tls`,
//! and the settings are kept in the configuration (`Config::tls`).
//!
//! The original's texts: `Direction must be INGRESS or EGRESS`, `File must
//! be specified`, `Unknown mode: <MODE>`, `Ciphers:` and `Updated cipher
//! list:` with one name a line, `Failed to set cipher suite. ` before a
//! refused list. A file that cannot be read or parsed answers `Error:
//! <category>:<value> (...)` and changes nothing. Differences: verbs and
//! `PRINT`/`SET` in any case; an unknown command or an extra token is an
//! error (the original ignored it); `TMP_DH_FILE` checks the file and says it has no effect
//! (rustls picks (EC)DHE groups itself); a change that leaves a side
//! unusable (a key that does not match the new chain mid-rotation,
//! `VERIFY_MODE PEER` before its CA) says that the previous settings stay
//! in force until it is complete. Reads files on the control thread; never
//! touches a shard or a session.

use crate::config::Config;
use crate::control::grammar::{TlsCommand, VerifyMode};
use crate::control::{ControlState, Reply};
use crate::tls::files::{FileError, KeyKind};
use crate::tls::{ciphers, Direction, NotReady, Side, VerifyFlags};

pub fn run(state: &ControlState, config: &mut Config, side: Side, command: TlsCommand) -> Reply {
    let mut draft = config.tls.side(side).clone();
    let loaded = match command {
        TlsCommand::VerifyMode(modes) => {
            draft.verify = verify_flags(&modes);
            Ok(String::new())
        }
        TlsCommand::CiphersPrint => {
            return Reply::ok(format!("Ciphers:\n{}", cipher_lines(&draft)))
        }
        TlsCommand::CiphersSet(list) => return set_ciphers(state, config, side, draft, &list),
        TlsCommand::KeyFile(file) => draft.set_key(&file, KeyKind::Any).map(|()| String::new()),
        TlsCommand::RsaKeyFile(file) => draft.set_key(&file, KeyKind::Rsa).map(|()| String::new()),
        TlsCommand::CertChainFile(file) => draft.set_chain(&file).map(|()| String::new()),
        TlsCommand::CaCertFile(file) => draft.set_ca(&file).map(|()| String::new()),
        TlsCommand::TmpDhFile(file) => draft.set_dh(&file).map(|()| {
            "TMP_DH_FILE has no effect with rustls, which chooses the (EC)DHE groups \
             itself; the file was checked and is not used.\n"
                .to_string()
        }),
    };
    match loaded {
        Err::<_, FileError>(error) => Reply::error(format!("{error}\n")),
        Ok(text) => Reply::ok(text + &commit(state, config, side, draft)),
    }
}

/// `PEER`, `NONE`, `FAIL_IF_NO_PEER_CERT`, `CLIENT_ONCE`; none given is
/// `NONE`.
fn verify_flags(modes: &[VerifyMode]) -> VerifyFlags {
    let mut flags = VerifyFlags::default();
    for mode in modes {
        match mode {
            VerifyMode::Peer => flags.peer = true,
            VerifyMode::None => {}
            VerifyMode::FailIfNoPeerCert => flags.fail_if_no_peer_cert = true,
            VerifyMode::ClientOnce => flags.client_once = true,
        }
    }
    flags
}

fn cipher_lines(d: &Direction) -> String {
    d.ciphers()
        .into_iter()
        .map(|s| ciphers::openssl_name(s) + "\n")
        .collect()
}

fn set_ciphers(
    state: &ControlState,
    config: &mut Config,
    side: Side,
    mut draft: Direction,
    list: &str,
) -> Reply {
    match ciphers::parse_list(list) {
        Ok(suites) => {
            draft.set_ciphers(suites);
            let lines = cipher_lines(&draft);
            let note = commit(state, config, side, draft);
            Reply::ok(format!("Updated cipher list:\n{lines}{note}"))
        }
        Err(e) => Reply::error(format!(
            "Failed to set cipher suite. {e}.\nUpdated cipher list:\n{}",
            cipher_lines(&draft)
        )),
    }
}

/// Keeps the draft and puts what it builds in force; the text tells the
/// operator when the previous settings stay in force instead.
fn commit(state: &ControlState, config: &mut Config, side: Side, draft: Direction) -> String {
    *config.tls.side_mut(side) = draft;
    let in_force = match side {
        Side::Ingress => state.shared.tls.load().ingress.is_some(),
        Side::Egress => true,
    };
    match config.tls.publish(side, &state.shared.tls) {
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
