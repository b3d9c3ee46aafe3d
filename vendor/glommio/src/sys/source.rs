// Unless explicitly stated otherwise all files in this repository are licensed
// under the MIT/Apache-2.0 License, at your convenience
//
// This product includes software developed at Datadog (https://www.datadoghq.com/). Copyright 2021 Datadog, Inc.
//
use crate::{
    iou::sqe::SockAddrStorage,
    sys::{
        DmaBuffer, IoBuffer, OsResult, PollableStatus, ReactorQueue, SourceId, Statx, TimeSpec64,
        Wakers,
    },
    GlommioError, IoRequirements, ReactorErrorKind, RingIoStats, TaskQueueHandle,
};
use futures_lite::{future, io};
use std::{
    cell::{Ref, RefCell, RefMut},
    convert::TryFrom,
    ffi::CString,
    fmt,
    mem::MaybeUninit,
    os::unix::io::RawFd,
    path::PathBuf,
    pin::Pin,
    rc::Rc,
    task::{Poll, Waker},
    time::Duration,
};

/// amqpprox patch: a `recvmsg`'s buffer, vector, header and peer address.
pub(crate) type RecvMsgParts = (
    Option<DmaBuffer>,
    libc::iovec,
    libc::msghdr,
    MaybeUninit<nix::sys::socket::sockaddr_storage>,
);

/// amqpprox patch: a `sendmsg`'s buffer, vector, header and peer address.
pub(crate) type SendMsgParts = (
    DmaBuffer,
    libc::iovec,
    libc::msghdr,
    nix::sys::socket::SockaddrStorage,
);

#[derive(Debug)]
#[allow(dead_code)] // Clippy is unhappy with some of the fields on these enums never being read,
                    // but they are certainly used, and read by debug
pub(crate) enum SourceType {
    // amqpprox patch: the file and registered-buffer requests keep their
    // buffers in boxes (as the message parts below), so that a source for
    // a socket's poll or close is 32 bytes of kind rather than 64.
    Write(PollableStatus, Box<IoBuffer>),
    Read(PollableStatus, Option<Box<IoBuffer>>),
    PollAdd,
    SockSend(Box<DmaBuffer>),
    // amqpprox patch: a send from bytes the source owns on the heap
    // (`TcpStream::send_behind`), not from the registered-buffer arena:
    // small handshake messages, where the arena's 4 KiB blocks (and its
    // fallback to a page-aligned allocation when they run out) cost more
    // than the copy. A `Vec` so that, once the send is complete, the same
    // memory carries the next message (`Reactor::queue_send`).
    SockSendBytes(Vec<u8>),
    SockRecv(Option<Box<DmaBuffer>>),
    // amqpprox patch: the message headers, addresses and the connect and
    // accept addresses live in boxes, so that `SourceType` (and every
    // source, which embeds one) is a few words rather than 256 bytes.
    SockRecvMsg(Box<RecvMsgParts>),
    SockSendMsg(Box<SendMsgParts>),
    Open(CString),
    FdataSync,
    Fallocate,
    Truncate,
    Close,
    // amqpprox patch: a socket option set through the ring.
    SetSockOpt,
    LinkRings,
    ForeignNotifier(u64, bool),
    Statx(CString, Box<RefCell<Statx>>),
    Timeout(TimeSpec64, u32),
    Connect(Box<nix::sys::socket::SockaddrStorage>),
    Accept(Box<SockAddrStorage>),
    Rename(Box<(PathBuf, PathBuf)>),
    CreateDir(PathBuf),
    Remove(PathBuf),
    BlockingFn,
    Invalid,
    CopyFileRange(RawFd, u64, usize),
    #[cfg(feature = "bench")]
    Noop,
}

impl TryFrom<SourceType> for Statx {
    type Error = GlommioError<()>;

    fn try_from(value: SourceType) -> Result<Self, Self::Error> {
        match value {
            SourceType::Statx(_, buf) => Ok(buf.into_inner()),
            src => Err(GlommioError::ReactorError(
                ReactorErrorKind::IncorrectSourceType(format!("{src:?}")),
            )),
        }
    }
}

#[derive(PartialEq, Clone, Copy)]
pub(crate) enum EnqueuedStatus {
    Enqueued,
    Canceled,
    Dispatched,
}

#[derive(Clone)]
pub struct EnqueuedSource {
    pub(crate) id: SourceId,
    pub(crate) queue: ReactorQueue,
    pub(crate) status: EnqueuedStatus,
}

pub(crate) type StatsCollectionFn = fn(&io::Result<usize>, &mut RingIoStats, waiters: u64) -> ();
pub(crate) type LatencyCollectionFn =
    fn(std::time::Duration, std::time::Duration, std::time::Duration, &mut RingIoStats) -> ();

#[derive(Copy, Clone)]
pub(crate) struct StatsCollection {
    /// fulfilled runs when the source exits the reactor
    pub(crate) fulfilled: Option<StatsCollectionFn>,

    /// reused runs when a fulfilled source is reused by another consumer
    pub(crate) reused: Option<StatsCollectionFn>,

    /// Called when a result is first consumed. It collects the time
    /// it took for user code to consume the result of a fulfilled source.
    /// This is called once, even if the source is reused multiple time.
    pub(crate) latency: Option<LatencyCollectionFn>,
}

/// A registered source of I/O events.
pub(crate) struct InnerSource {
    /// Raw file descriptor on Unix platforms.
    pub(crate) raw: RawFd,

    /// Tasks interested in events on this source.
    pub(crate) wakers: Wakers,

    pub(crate) source_type: SourceType,

    pub(crate) io_requirements: IoRequirements,

    pub(crate) timeout: Option<TimeSpec64>,

    pub(crate) enqueued: Option<EnqueuedSource>,

    pub(crate) stats_collection: Option<&'static StatsCollection>,

    pub(crate) task_queue: Option<TaskQueueHandle>,
}

// amqpprox patch: kept small, since every I/O request builds one; a large
// variant goes in a box.
const _: () = assert!(std::mem::size_of::<SourceType>() <= 32);

// amqpprox patch: with its `Rc` and `RefCell` a source takes 224 bytes, one
// of the allocator's size classes; 8 bytes more would make it 256.
const _: () = assert!(std::mem::size_of::<InnerSource>() <= 200);

impl InnerSource {
    /// A source for a request not queued yet, with no result.
    #[inline(always)]
    fn fresh(
        io_requirements: IoRequirements,
        raw: RawFd,
        source_type: SourceType,
        stats_collection: Option<&'static StatsCollection>,
        task_queue: Option<TaskQueueHandle>,
    ) -> InnerSource {
        InnerSource {
            raw,
            wakers: Wakers::new(),
            source_type,
            io_requirements,
            enqueued: None,
            timeout: None,
            stats_collection,
            task_queue,
        }
    }

    /// amqpprox patch: whether anyone reads this source's queued, submitted
    /// and fulfilled times (its `latency` statistics function). Only then
    /// is the clock read for them: sockets collect none, and the three
    /// readings were a third of a proxy's clock reads per connection.
    pub(crate) fn collects_latency(&self) -> bool {
        self.stats_collection.is_some_and(|s| s.latency.is_some())
    }

    pub(crate) fn update_source_type(&mut self, source_type: SourceType) -> SourceType {
        std::mem::replace(&mut self.source_type, source_type)
    }
}

impl fmt::Debug for InnerSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InnerSource")
            .field("raw", &self.raw)
            .field("wakers", &self.wakers)
            .field("source_type", &self.source_type)
            .field("io_requirements", &self.io_requirements)
            .finish()
    }
}

#[derive(Debug)]
pub struct Source {
    pub(crate) inner: Pin<Rc<RefCell<InnerSource>>>,
}

impl Source {
    /// Registers an I/O source in the reactor.
    pub(crate) fn new(
        ioreq: IoRequirements,
        raw: RawFd,
        source_type: SourceType,
        stats_collection: Option<&'static StatsCollection>,
        task_queue: Option<TaskQueueHandle>,
    ) -> Source {
        // amqpprox patch: the source is written straight into its heap
        // cell. `Rc::pin(RefCell::new(..))` built it on the stack first and
        // copied it over after the allocation, once per I/O request.
        let mut cell = Rc::<RefCell<InnerSource>>::new_uninit();
        Rc::get_mut(&mut cell)
            .expect("a new Rc has one owner")
            .write(RefCell::new(InnerSource::fresh(
                ioreq,
                raw,
                source_type,
                stats_collection,
                task_queue,
            )));
        // SAFETY: initialised just above; an `Rc`'s contents never move,
        // which is what `Pin` promises.
        Source {
            inner: unsafe { Pin::new_unchecked(cell.assume_init()) },
        }
    }

    /// amqpprox patch: a source whose completion was seen, made over for a
    /// new request exactly as `new` makes one. The caller guarantees the
    /// completion was seen (the source is in no ring and no source map);
    /// `Reactor::give_send_source` keeps only such sources.
    pub(crate) fn reuse(
        &self,
        ioreq: IoRequirements,
        raw: RawFd,
        source_type: SourceType,
        stats_collection: Option<&'static StatsCollection>,
        task_queue: Option<TaskQueueHandle>,
    ) {
        let mut inner = self.inner.borrow_mut();
        debug_assert!(inner.enqueued.is_none() && inner.wakers.result.is_some());
        *inner = InnerSource::fresh(ioreq, raw, source_type, stats_collection, task_queue);
    }

    pub(crate) fn set_timeout(&self, d: Duration) -> Option<Duration> {
        let mut inner = self.inner.borrow_mut();
        let t = &mut inner.timeout;
        let old = *t;
        match TimeSpec64::try_from(d) {
            Ok(dur) | Err(dur) => *t = Some(dur),
        }
        old.map(Duration::from)
    }

    pub(super) fn timeout_ref(&self) -> Ref<'_, Option<TimeSpec64>> {
        Ref::map(self.inner.borrow(), |x| &x.timeout)
    }

    pub(super) fn source_type(&self) -> Ref<'_, SourceType> {
        Ref::map(self.inner.borrow(), |x| &x.source_type)
    }

    pub(crate) fn source_type_mut(&self) -> RefMut<'_, SourceType> {
        RefMut::map(self.inner.borrow_mut(), |x| &mut x.source_type)
    }

    /// amqpprox patch: for a `send_behind` source whose completion was seen
    /// (in no ring and no source map), its buffer's capacity; `None` for
    /// any other source.
    pub(crate) fn completed_send_capacity(&self) -> Option<usize> {
        let inner = self.inner.borrow();
        match &inner.source_type {
            SourceType::SockSendBytes(buf)
                if inner.enqueued.is_none() && inner.wakers.result.is_some() =>
            {
                Some(buf.capacity())
            }
            _ => None,
        }
    }

    /// amqpprox patch: the request kind, leaving `Invalid` in its place,
    /// for a source that stays alive (see `Reactor::queue_send`).
    pub(crate) fn extract_source_type_in_place(&self) -> SourceType {
        self.inner
            .borrow_mut()
            .update_source_type(SourceType::Invalid)
    }

    pub(crate) fn extract_source_type(self) -> SourceType {
        self.inner
            .borrow_mut()
            .update_source_type(SourceType::Invalid)
    }

    pub(crate) fn extract_buffer(self) -> IoBuffer {
        let stype = self.extract_source_type();
        match stype {
            SourceType::Read(_, Some(buffer)) => *buffer,
            SourceType::Write(_, buffer) => *buffer,
            x => panic!("Could not extract buffer. Source: {:?}", x),
        }
    }

    pub(crate) fn buffer(&self) -> Ref<'_, IoBuffer> {
        Ref::map(self.source_type(), |stype| match stype {
            SourceType::Read(_, Some(buffer)) => &**buffer,
            SourceType::Write(_, buffer) => &**buffer,
            x => panic!("Could not extract buffer. Source: {:?}", x),
        })
    }

    pub(crate) fn result(&self) -> Option<io::Result<usize>> {
        let mut inner = self.inner.borrow_mut();
        let ret = inner
            .wakers
            .result
            .as_ref()
            .map(|x| OsResult::from(x).into());
        if ret.is_none() {
            return ret;
        }

        // if there is a scheduler latency collection function present, invoke it once
        if let Some(Some(stat_fn)) = inner.stats_collection.as_ref().map(|x| x.latency) {
            if let Some(lat) = inner.wakers.timestamps() {
                drop(inner);
                let pre_lat = lat.submitted_at - lat.queued_at;
                let io_lat = lat.fulfilled_at - lat.submitted_at;
                let post_lat = lat.fulfilled_at.elapsed();

                let reactor = &crate::executor().reactor().sys;
                (stat_fn)(
                    pre_lat,
                    io_lat,
                    post_lat,
                    reactor.ring_for_source(self).io_stats_mut(),
                );
                (stat_fn)(
                    pre_lat,
                    io_lat,
                    post_lat,
                    reactor
                        .ring_for_source(self)
                        .io_stats_for_task_queue_mut(crate::executor().current_task_queue()),
                );
            }
        }

        ret
    }

    // adds a single waiter to the list, replacing any waiter that may already
    // exist. Should be used for single streams that map a future 1:1 to their I/O
    // source
    /// amqpprox patch: how many completions this source has had (see
    /// `Wakers::fired`).
    pub(crate) fn fired(&self) -> u64 {
        self.inner.borrow().wakers.fired
    }

    /// amqpprox patch: whether the request is still in the source map, that
    /// is, its completion has not been consumed yet.
    pub(crate) fn in_flight(&self) -> bool {
        self.inner.borrow().enqueued.is_some()
    }

    /// amqpprox patch: every event a poll source has reported so far (see
    /// `Wakers::poll_events`).
    pub(crate) fn poll_events(&self) -> u32 {
        self.inner.borrow().wakers.poll_events
    }

    pub(crate) fn add_waiter_single(&self, waker: &Waker) {
        let mut inner = self.inner.borrow_mut();
        let waiters = &mut inner.wakers.waiters;
        match waiters.first_mut() {
            Some(w) => {
                if !w.will_wake(waker) {
                    *w = waker.clone();
                }
            }
            None => waiters.push(waker.clone()),
        }
        debug_assert_eq!(inner.wakers.waiters.len(), 1)
    }

    // adds a waiter to the list. Useful for streams that have many futures waiting
    // on a single I/O source
    pub(crate) fn add_waiter_many(&self, waker: Waker) {
        self.inner.borrow_mut().wakers.waiters.push(waker)
    }

    pub(super) fn is_installed(&self) -> Option<bool> {
        match &self.inner.borrow().source_type {
            SourceType::ForeignNotifier(_, installed) => Some(*installed),
            _ => None,
        }
    }

    pub(super) fn raw(&self) -> RawFd {
        self.inner.borrow().raw
    }

    pub(crate) fn stats_collection(&self) -> Option<&'static StatsCollection> {
        self.inner.borrow().stats_collection
    }

    pub(crate) async fn collect_rw(&self) -> io::Result<usize> {
        future::poll_fn(|cx| {
            if let Some(result) = self.result() {
                return Poll::Ready(result);
            }

            self.add_waiter_many(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        let mut inner = self.inner.borrow_mut();
        let enqueued = inner.enqueued.as_mut();
        if let Some(EnqueuedSource { id, queue, status }) = enqueued {
            match status {
                EnqueuedStatus::Enqueued => {
                    // We never submitted the request, so it's safe to consume
                    // source here -- kernel didn't see our buffers. By consuming
                    // the source we are signaling to the submit method that we are
                    // no longer interested in submitting this. This should be cheaper
                    // than removing elements from the vector all the time.

                    *status = EnqueuedStatus::Canceled;
                }
                EnqueuedStatus::Dispatched => {
                    // We are cancelling this request, but it is already submitted.
                    // This means that the kernel might be using the buffers right
                    // now, so we delay `consume_source` until we consume the
                    // corresponding event from the completion queue.

                    queue.borrow_mut().cancel_request(*id);
                    *status = EnqueuedStatus::Canceled; // not necessary, but useful for correctness
                }
                EnqueuedStatus::Canceled => unreachable!(),
            }
        }
    }
}
