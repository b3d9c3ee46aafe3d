//! Shard-local pools of I/O buffers: the pass-through pump's large ones,
//! and the small read buffers of the handshakes.
//!
//! A session takes a buffer only while it has bytes to move (or a
//! handshake to read) and gives it back as soon as it is done, so an idle
//! session pins no buffer and the steady state allocates nothing.
//! Single-threaded (`Rc`, `RefCell`): never shared across shards.

use std::cell::{Cell, RefCell};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::rc::Rc;

/// Size of one pump buffer. Measured with the bench harness (10 MB
/// messages): 256 KiB reads cut the proxy's CPU per GB by about a third
/// against 128 KiB (fewer syscalls and peer wake-ups per byte); larger
/// buffers gained nothing more. Pages a read never touches are never
/// resident (they are mapped pages of their own, [`Pages`]), so small
/// messages do not pay for the size.
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
    free: RefCell<Vec<Storage>>,
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
            Storage::new(self.size)
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

    fn give_back(&self, buf: Storage) {
        self.in_use.set(self.in_use.get() - 1);
        let mut free = self.free.borrow_mut();
        if free.len() < self.keep {
            free.push(buf);
        }
    }
}

/// A buffer on loan; returns itself to the pool when dropped.
pub struct PooledBuffer {
    buf: Option<Storage>,
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

/// Buffers from this size up are mapped pages of their own ([`Pages`]);
/// smaller ones (the handshakes' reads) come from the heap.
const MAPPED_FROM: usize = 64 * 1024;

/// Where a buffer's bytes live.
enum Storage {
    Heap(Box<[u8]>),
    Mapped(Pages),
}

impl Storage {
    fn new(size: usize) -> Storage {
        if size >= MAPPED_FROM {
            Storage::Mapped(Pages::new(size))
        } else {
            Storage::Heap(vec![0u8; size].into_boxed_slice())
        }
    }
}

impl Deref for Storage {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Storage::Heap(b) => b,
            Storage::Mapped(p) => p.as_slice(),
        }
    }
}

impl DerefMut for Storage {
    fn deref_mut(&mut self) -> &mut [u8] {
        match self {
            Storage::Heap(b) => b,
            Storage::Mapped(p) => p.as_mut_slice(),
        }
    }
}

/// Anonymous pages mapped for one buffer, unmapped when it is dropped.
/// Fresh pages read as zero and are not resident until a read writes
/// them, so a 256 KiB pump buffer that carried a 100-byte frame costs one
/// page of memory; the heap (whichever allocator the binary uses) would
/// hand back reused memory and zero all of it.
struct Pages {
    ptr: NonNull<u8>,
    len: usize,
}

impl Pages {
    fn new(len: usize) -> Pages {
        // SAFETY: a new private anonymous mapping; no existing memory is
        // touched. The result is checked before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            std::alloc::handle_alloc_error(
                std::alloc::Layout::from_size_align(len, 4096).expect("a page-aligned layout"),
            );
        }
        Pages {
            ptr: NonNull::new(ptr.cast()).expect("mmap never maps address 0 here"),
            len,
        }
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes mapped readable and writable for our lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        // SAFETY: the mapping `new` made, unmapped once; no slice of it
        // outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
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
