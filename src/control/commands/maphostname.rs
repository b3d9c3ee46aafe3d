//! `MAPHOSTNAME DNS` (see `docs/commands.md#maphostname`): turns on the
//! process-wide reverse-DNS mapper in [`crate::hostnames`]. Owns only the
//! texts; it never resolves a name itself and never blocks.
//!
//! Sessions ask the mapper when they show an address, so the switch covers
//! current sessions too, as the original's reply says. It cannot be turned
//! off again, as in the original.

use crate::control::Reply;

pub fn run() -> Reply {
    match crate::hostnames::enable() {
        Ok(()) => Reply::ok("Hostname mapper set for all current sessions.\n"),
        Err(e) => Reply::error(format!("Cannot start the hostname resolver: {e}\n")),
    }
}
