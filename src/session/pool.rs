//! Shard-local pools of I/O buffers: the pass-through pump's large ones,
//! and the small read buffers of the handshakes.
//!
//! A session takes a buffer only while it has bytes to move (or a
//! handshake to read) and gives it back as soon as it is done, so an idle
//! session pins no buffer and the steady state allocates nothing.
//! Single-threaded (`Rc`, `RefCell`): never shared across shards.

use std::cell::{Cell, RefCell};
use std::ops::{Deref, DerefMut};
use std::rc::Rc;

/// Size of one pump buffer. Measured with the bench harness (10 MB
/// messages): 256 KiB reads cut the proxy's CPU per GB by about a third
/// against 128 KiB (fewer syscalls and peer wake-ups per byte); larger
/// buffers gained nothing more. Pages a read never touches are never
/// resident (see `main`: buffers this size are mmap'd), so small messages
/// do not pay for the size.
pub const BUFFER_SIZE: usize = 256 * 1024;

/// Pump buffers kept for reuse (4 MiB per shard at most); beyond this,
/// returned buffers are freed so a burst does not pin memory for ever.
const KEEP: usize = 16;

/// Handshake read buffers kept for reuse: enough for the handshakes a busy
/// shard runs at once (512 KiB at most, at 4 KiB each).
pub const HANDSHAKE_KEEP: usize = 128;

/// The pool. Cheap to clone through `Rc`.
pub struct BufferPool {
    size: usize,
    keep: usize,
    free: RefCell<Vec<Box<[u8]>>>,
    allocated: Cell<u64>,
    in_use: Cell<u64>,
    peak_in_use: Cell<u64>,
}

impl BufferPool {
    /// The pump's pool: [`BUFFER_SIZE`] buffers.
    pub fn new() -> Rc<BufferPool> {
        BufferPool::of(BUFFER_SIZE, KEEP)
    }

    /// A pool of `size`-byte buffers that keeps at most `keep` for reuse.
    pub fn of(size: usize, keep: usize) -> Rc<BufferPool> {
        Rc::new(BufferPool {
            size,
            keep,
            free: RefCell::default(),
            allocated: Cell::default(),
            in_use: Cell::default(),
            peak_in_use: Cell::default(),
        })
    }

    /// A buffer, from the pool or freshly allocated when the pool is empty.
    pub fn take(self: &Rc<Self>) -> PooledBuffer {
        let buf = self.free.borrow_mut().pop().unwrap_or_else(|| {
            self.allocated.set(self.allocated.get() + 1);
            vec![0u8; self.size].into_boxed_slice()
        });
        self.in_use.set(self.in_use.get() + 1);
        self.peak_in_use
            .set(self.peak_in_use.get().max(self.in_use.get()));
        PooledBuffer {
            buf: Some(buf),
            pool: Rc::clone(self),
        }
    }

    /// Buffers ever allocated (for statistics).
    pub fn allocated(&self) -> u64 {
        self.allocated.get()
    }

    /// The most buffers lent out at once since the last call; restarts from
    /// the current count (statistics read it once per interval).
    pub fn take_peak_in_use(&self) -> u64 {
        self.peak_in_use.replace(self.in_use.get())
    }

    /// Buffers currently lent out.
    pub fn in_use(&self) -> u64 {
        self.in_use.get()
    }

    fn give_back(&self, buf: Box<[u8]>) {
        self.in_use.set(self.in_use.get() - 1);
        let mut free = self.free.borrow_mut();
        if free.len() < self.keep {
            free.push(buf);
        }
    }
}

/// A buffer on loan; returns itself to the pool when dropped.
pub struct PooledBuffer {
    buf: Option<Box<[u8]>>,
    pool: Rc<BufferPool>,
}

impl Deref for PooledBuffer {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for PooledBuffer {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give_back(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused() {
        let pool = BufferPool::new();
        let a = pool.take();
        assert_eq!(a.len(), BUFFER_SIZE);
        drop(a);
        let _b = pool.take();
        assert_eq!((pool.allocated(), pool.in_use()), (1, 1));
    }

    #[test]
    fn a_small_pool_keeps_only_its_bound() {
        let pool = BufferPool::of(4096, 2);
        let taken: Vec<_> = (0..3).map(|_| pool.take()).collect();
        assert!(taken.iter().all(|b| b.len() == 4096));
        drop(taken);
        assert_eq!(pool.free.borrow().len(), 2);
        let _again: Vec<_> = (0..3).map(|_| pool.take()).collect();
        assert_eq!(pool.allocated(), 4);
    }
}
