//! For the tests of a shard's reactor (`tests/reactor_*.rs`): what every
//! io_uring instance of this process shows in `/proc/self/fdinfo`, and a
//! peer that answers slowly, so that the reactor sleeps between its bytes.
//! Reads and talks only; it asserts nothing.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

/// The `fdinfo` text of every io_uring instance open in this process.
pub fn ring_fdinfo() -> Vec<String> {
    let mut rings = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd") {
        let entry = entry.expect("fd entry");
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if target.to_string_lossy() != "anon_inode:[io_uring]" {
            continue;
        }
        let info_path = format!("/proc/self/fdinfo/{}", entry.file_name().to_string_lossy());
        if let Ok(info) = std::fs::read_to_string(info_path) {
            rings.push(info);
        }
    }
    rings
}

/// A peer thread that connects to `addr` and, `exchanges` times, waits a
/// millisecond, sends a byte and reads one back: each wait for its byte
/// puts the reactor on the other side to sleep.
pub fn slow_peer(addr: SocketAddr, exchanges: u64) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut socket = std::net::TcpStream::connect(addr).expect("connect");
        let mut byte = [0u8; 1];
        for _ in 0..exchanges {
            std::thread::sleep(Duration::from_millis(1));
            socket.write_all(b"p").expect("peer write");
            socket.read_exact(&mut byte).expect("peer read");
        }
    })
}
