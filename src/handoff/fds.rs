//! Passing file descriptors over a Unix stream socket with `SCM_RIGHTS`:
//! one message of one marker byte carrying up to
//! [`MAX_FDS_PER_BATCH`](super::wire::MAX_FDS_PER_BATCH) descriptors.
//!
//! Owns only the `sendmsg`/`recvmsg` calls and the control-message layout;
//! never decides which descriptors to send or what they are. Every
//! descriptor received is wrapped in an [`OwnedFd`] before anything else can
//! fail, so an error never leaks one, and all arrive close-on-exec.

use super::wire::MAX_FDS_PER_BATCH;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// Why a batch could not be received.
#[derive(Debug, thiserror::Error)]
pub enum RecvFdsError {
    #[error("receiving sockets failed: {0}")]
    Io(#[from] io::Error),
    #[error("the peer closed the connection before sending its sockets")]
    Closed,
    /// The sender put more descriptors in one message than the batch size;
    /// the kernel closed the ones that did not fit.
    #[error("a socket batch was truncated: more than {MAX_FDS_PER_BATCH} sockets in one message")]
    Truncated,
}

/// One received message: its marker byte and the descriptors it carried.
#[derive(Debug)]
pub struct Batch {
    pub marker: u8,
    pub fds: Vec<OwnedFd>,
}

/// Bytes of control buffer for `count` descriptors, as `CMSG_SPACE` says.
fn control_space(count: usize) -> usize {
    // SAFETY: CMSG_SPACE only computes a size.
    unsafe { libc::CMSG_SPACE((count * size_of::<RawFd>()) as libc::c_uint) as usize }
}

/// A control buffer aligned for `cmsghdr` (the kernel reads it as one).
fn control_buffer(count: usize) -> Vec<u64> {
    vec![0u64; control_space(count).div_ceil(size_of::<u64>())]
}

/// Sends `marker` with `fds` attached. The descriptors stay open here: the
/// kernel gives the receiver its own references to the same open sockets.
pub fn send_batch(stream: &UnixStream, marker: u8, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS_PER_BATCH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} sockets exceed the batch of {MAX_FDS_PER_BATCH}",
                fds.len()
            ),
        ));
    }
    let mut byte = [marker];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = control_buffer(fds.len());
    // SAFETY: an all-zero msghdr is valid (null buffers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = control_space(fds.len()) as _;
        // SAFETY: the buffer holds CMSG_SPACE(n fds) aligned bytes, so the
        // first header and its data fit; the data is written unaligned.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN((fds.len() * size_of::<RawFd>()) as _) as _;
            let data = libc::CMSG_DATA(header).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                data.add(i).write_unaligned(fd.as_raw_fd());
            }
        }
    }
    loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        match sent {
            1 => return Ok(()),
            0 => return Err(io::ErrorKind::WriteZero.into()),
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

/// Receives one message of one byte and the descriptors attached to it.
/// Reads exactly one byte, so it never consumes what follows the batch.
pub fn recv_batch(stream: &UnixStream) -> Result<Batch, RecvFdsError> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = control_buffer(MAX_FDS_PER_BATCH);
    // SAFETY: an all-zero msghdr is valid (null buffers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control_space(MAX_FDS_PER_BATCH) as _;
    let received = loop {
        // SAFETY: msg points at live buffers for the duration of the call.
        let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n;
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error.into());
        }
    };
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with well-formed headers within
    // msg_controllen; each SCM_RIGHTS payload is an array of descriptors
    // now owned by this process, taken over at once.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(&msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(header).cast::<RawFd>();
                for i in 0..payload / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            header = libc::CMSG_NXTHDR(&msg, header);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(RecvFdsError::Truncated);
    }
    if received == 0 {
        return Err(RecvFdsError::Closed);
    }
    Ok(Batch {
        marker: byte[0],
        fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    /// The inode of whatever `fd` refers to: equal inodes mean the same
    /// open file, whichever descriptor number it arrived under.
    fn inode(fd: BorrowedFd<'_>) -> u64 {
        // SAFETY: an all-zero stat is a valid out-buffer for fstat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open for the borrow; st is a valid out-pointer.
        assert_eq!(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) }, 0);
        st.st_ino
    }

    #[test]
    fn descriptors_arrive_as_the_same_open_files() {
        let (a, b) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (pipe_r, mut pipe_w) = UnixStream::pair().unwrap();
        send_batch(&a, b'+', &[listener.as_fd(), pipe_r.as_fd()]).unwrap();
        let batch = recv_batch(&b).unwrap();
        assert_eq!(batch.marker, b'+');
        assert_eq!(batch.fds.len(), 2);
        assert_eq!(inode(batch.fds[0].as_fd()), inode(listener.as_fd()));
        assert_eq!(inode(batch.fds[1].as_fd()), inode(pipe_r.as_fd()));
        // Same socket, so bytes written to its peer are readable through
        // the received descriptor even after the original is closed.
        drop(pipe_r);
        pipe_w.write_all(b"hi").unwrap();
        let mut received = UnixStream::from(batch.fds.into_iter().nth(1).unwrap());
        let mut buf = [0u8; 2];
        received.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }

    #[test]
    fn received_descriptors_are_close_on_exec() {
        let (a, b) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        send_batch(&a, b'.', &[listener.as_fd()]).unwrap();
        let batch = recv_batch(&b).unwrap();
        // SAFETY: F_GETFD on an open descriptor.
        let flags = unsafe { libc::fcntl(batch.fds[0].as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
    }

    #[test]
    fn a_batch_without_descriptors_carries_its_marker() {
        let (a, b) = UnixStream::pair().unwrap();
        send_batch(&a, b'.', &[]).unwrap();
        let batch = recv_batch(&b).unwrap();
        assert_eq!((batch.marker, batch.fds.len()), (b'.', 0));
    }

    #[test]
    fn a_full_batch_fits_and_one_more_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let full = vec![listener.as_fd(); MAX_FDS_PER_BATCH];
        send_batch(&a, b'+', &full).unwrap();
        assert_eq!(recv_batch(&b).unwrap().fds.len(), MAX_FDS_PER_BATCH);
        let over = vec![listener.as_fd(); MAX_FDS_PER_BATCH + 1];
        let error = send_batch(&a, b'+', &over).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn batches_and_text_stay_apart() {
        // Two batches then text, all queued before the reader starts: each
        // recv_batch takes one byte and its own descriptors only.
        let (mut a, b) = UnixStream::pair().unwrap();
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        send_batch(&a, b'+', &[l1.as_fd()]).unwrap();
        send_batch(&a, b'.', &[l2.as_fd()]).unwrap();
        a.write_all(b"text").unwrap();
        drop(a);
        let first = recv_batch(&b).unwrap();
        let second = recv_batch(&b).unwrap();
        assert_eq!((first.marker, first.fds.len()), (b'+', 1));
        assert_eq!((second.marker, second.fds.len()), (b'.', 1));
        assert_eq!(inode(first.fds[0].as_fd()), inode(l1.as_fd()));
        assert_eq!(inode(second.fds[0].as_fd()), inode(l2.as_fd()));
        let mut rest = String::new();
        (&b).read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "text");
    }

    #[test]
    fn a_closed_peer_is_reported() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(a);
        assert!(matches!(recv_batch(&b), Err(RecvFdsError::Closed)));
    }

    #[test]
    fn too_many_descriptors_in_one_message_are_reported_not_leaked() {
        // A sender that ignores the batch size: the receiver's buffer is
        // too small, the kernel truncates, and the receiver says so.
        let (a, b) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let count = MAX_FDS_PER_BATCH + 8;
        let mut byte = [b'+'];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control = control_buffer(count);
        // SAFETY: as in send_batch, with a buffer sized for `count`.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control_space(count) as _;
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN((count * size_of::<RawFd>()) as _) as _;
            let data = libc::CMSG_DATA(header).cast::<RawFd>();
            for i in 0..count {
                data.add(i).write_unaligned(listener.as_raw_fd());
            }
            assert_eq!(libc::sendmsg(a.as_raw_fd(), &msg, 0), 1);
        }
        assert!(matches!(recv_batch(&b), Err(RecvFdsError::Truncated)));
    }
}
