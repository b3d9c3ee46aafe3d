//! The descriptor reserve (`amqpprox::fdlimit`) at a real open-files limit:
//! this process lowers its own soft limit, uses up every descriptor, sees
//! `accept` fail with EMFILE, and accepts again with one reserved
//! descriptor given back. Its own test binary with a single test, because
//! the limit is process-wide.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};

use amqpprox::fdlimit::{current, is_descriptor_exhaustion, AcceptBackoff, DescriptorReserve};

fn set_soft_limit(soft: u64) {
    let hard = current().unwrap().hard;
    let lim = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard.map_or(libc::RLIM_INFINITY, |h| h as libc::rlim_t),
    };
    // SAFETY: setrlimit reads one rlimit from the struct we own.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}

#[test]
fn the_reserve_lets_the_control_socket_accept_at_the_limit() {
    let before = current().unwrap().soft.unwrap_or(1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control");
    let listener = UnixListener::bind(&path).unwrap();
    let mut reserve = DescriptorReserve::new(2).unwrap();

    // Some room above what is open now, then fill it.
    let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    set_soft_limit(open_now + 16);
    let mut hog = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => hog.push(f),
            Err(e) => {
                assert!(is_descriptor_exhaustion(&e), "{e}");
                break;
            }
        }
    }
    // The client's connect worked before the limit (its socket is
    // created first); the proxy's accept is what fails.
    drop(hog.pop());
    let mut client = UnixStream::connect(&path).unwrap();
    let err = listener.accept().unwrap_err();
    assert!(is_descriptor_exhaustion(&err), "{err}");
    let mut backoff = AcceptBackoff::default();
    assert!(backoff.on_failure().log);

    let accepted = reserve.with_released(|| listener.accept());
    let (mut server_side, _) = accepted.expect("accept with a reserved descriptor");
    assert_eq!(backoff.on_success(), Some(1));
    client.write_all(b"PING\n").unwrap();
    let mut got = [0u8; 5];
    server_side.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"PING\n");
    // The accepted socket holds the descriptor the reserve gave back.
    assert_eq!(reserve.held(), 1);

    drop((server_side, client, hog));
    set_soft_limit(before);
    assert_eq!(reserve.refill(), 2);
}
