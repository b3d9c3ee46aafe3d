//! Ports for the proxies and peers a test starts: free a moment ago, and
//! never handed out twice in one process. It only chooses numbers; it never
//! binds a port for longer than it takes to read one.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;

/// A port on 127.0.0.1 that was free a moment ago: bind port 0, read it,
/// release it.
///
/// Never the same port twice in one process: the tests of one binary run
/// side by side and bind their ports a moment after choosing them. Two
/// proxies handed one port would both bind it (their listeners use
/// SO_REUSEPORT) and share it, and a test that stops one listener would
/// still find the port open; one test handed the same port twice would see
/// its "other" port already open.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        let port = listener
            .local_addr()
            .expect("local address of a bound listener")
            .port();
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(port) {
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_never_gets_the_same_port_twice() {
        // bind(0) picks among ~14,000 ports; 3,000 draws repeat one with
        // near certainty (birthday bound), so without the record of ports
        // handed out this fails.
        let ports: Vec<u16> = (0..3000).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
