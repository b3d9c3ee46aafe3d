//! Shards: one glommio executor per core, pinned, each with its own
//! SO_REUSEPORT listeners, its own sessions, buffer pool and DNS cache
//! (design.md "Shape", DECISIONS Add 1, 2).
//!
//! The control thread talks to a shard only through its inbox
//! ([`ShardCommand`], each with a reply channel) and the shared
//! [`Shared`] state (an `ArcSwap` of the configuration snapshot and a few
//! immutable settings). Sessions never leave their shard. Nothing here
//! blocks: the inbox is awaited, never polled with a sleep.

use crate::config::ConfigSnapshot;
use crate::net::{self, Resolver};
use crate::session::pool::BufferPool;
use crate::session::{self, SessionId, SessionInfo};
use arc_swap::ArcSwap;
use glommio::{LocalExecutorBuilder, Placement};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What every shard shares with the control thread.
pub struct Shared {
    /// The configuration new sessions route by.
    pub config: ArcSwap<ConfigSnapshot>,
    pub handshake_timeout: Duration,
    pub connect_timeout: Duration,
    /// This host's name, for `amqpprox_host` (resolved once at start).
    pub hostname: String,
    next_session: AtomicU64,
}

impl Shared {
    pub fn new(
        config: Arc<ConfigSnapshot>,
        handshake_timeout: Duration,
        connect_timeout: Duration,
    ) -> Shared {
        Shared {
            config: ArcSwap::new(config),
            handshake_timeout,
            connect_timeout,
            hostname: local_hostname(),
            next_session: AtomicU64::new(1),
        }
    }

    /// The next process-wide session id (starts at 1, never reused).
    pub fn next_session_id(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed)
    }
}

fn local_hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // or truncates within it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A request to one shard, answered on its reply channel.
pub enum ShardCommand {
    /// Open this shard's listener on the address.
    Listen {
        addr: SocketAddr,
        reply: flume::Sender<Result<(), String>>,
    },
    /// Close this shard's listener on the port, or all of them.
    StopListening {
        port: Option<u16>,
        reply: flume::Sender<Vec<u16>>,
    },
    /// Leave the executor: the process is exiting.
    Shutdown,
}

/// One shard's state, owned by its executor thread.
pub struct Shard {
    pub index: usize,
    pub shared: Arc<Shared>,
    pub pool: Rc<BufferPool>,
    pub resolver: Resolver,
    pub sessions: RefCell<BTreeMap<SessionId, Rc<SessionInfo>>>,
    /// Open listeners by port, each with the sender that stops it.
    listeners: RefCell<BTreeMap<u16, flume::Sender<()>>>,
}

impl Shard {
    fn new(index: usize, shared: Arc<Shared>) -> Shard {
        Shard {
            index,
            shared,
            pool: BufferPool::new(),
            resolver: Resolver::default(),
            sessions: RefCell::new(BTreeMap::new()),
            listeners: RefCell::new(BTreeMap::new()),
        }
    }

    fn listen(self: &Rc<Self>, addr: SocketAddr) -> Result<(), String> {
        if self.listeners.borrow().contains_key(&addr.port()) {
            return Ok(());
        }
        let listener =
            net::bind_listener(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let (stop_tx, stop_rx) = flume::bounded::<()>(1);
        self.listeners.borrow_mut().insert(addr.port(), stop_tx);
        let shard = Rc::clone(self);
        let port = addr.port();
        glommio::spawn_local(async move {
            let accept_loop = async {
                loop {
                    match listener.accept().await {
                        Ok(stream) => {
                            glommio::spawn_local(session::run(Rc::clone(&shard), stream, port))
                                .detach();
                        }
                        Err(e) => {
                            // Out of file descriptors, mostly: back off
                            // instead of spinning, keep serving the rest.
                            log::warn!("Accept on port {port} failed: {e}");
                            glommio::timer::sleep(Duration::from_millis(50)).await;
                        }
                    }
                }
            };
            futures_lite::future::or(accept_loop, async {
                let _ = stop_rx.recv_async().await;
            })
            .await;
            log::debug!("Shard {} stopped listening on port {port}", shard.index);
        })
        .detach();
        Ok(())
    }

    fn stop_listening(&self, port: Option<u16>) -> Vec<u16> {
        let mut listeners = self.listeners.borrow_mut();
        let ports: Vec<u16> = match port {
            Some(p) => listeners
                .contains_key(&p)
                .then_some(p)
                .into_iter()
                .collect(),
            None => listeners.keys().copied().collect(),
        };
        for p in &ports {
            // Dropping the sender wakes the listener task, which then exits
            // and closes its socket.
            listeners.remove(p);
        }
        ports
    }
}

/// The control side of a running shard.
pub struct ShardHandle {
    pub index: usize,
    pub inbox: flume::Sender<ShardCommand>,
}

/// Why a shard could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(
        "shard {index} cannot start its io_uring executor: {reason}. amqpprox needs Linux io_uring \
         (kernel 5.8 or later, kernel.io_uring_disabled=0, not blocked by a seccomp profile) and a \
         memlock limit of at least 1 MiB per shard (ulimit -l)"
    )]
    Executor { index: usize, reason: String },
}

/// Events the supervisor watches.
#[derive(Debug)]
pub enum ShardEvent {
    Started(usize),
    FailedToStart(ShardError),
    /// A shard's thread ended; unless the process is exiting this is fatal.
    Exited {
        index: usize,
        panicked: bool,
    },
}

/// The CPUs this process may run on, for pinning shards.
pub fn usable_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|cpu| libc::CPU_ISSET(*cpu, &set))
            .collect()
    }
}

/// Registered io memory per executor. The proxy does no file I/O, so a small
/// amount keeps the default 8 MiB memlock limit enough for every shard.
const IO_MEMORY: usize = 256 * 1024;

/// Starts shard `index` on its own thread, pinned to `cpu` when given.
pub fn spawn(
    index: usize,
    cpu: Option<usize>,
    shared: Arc<Shared>,
    events: flume::Sender<ShardEvent>,
) -> std::io::Result<ShardHandle> {
    let (inbox_tx, inbox_rx) = flume::unbounded::<ShardCommand>();
    std::thread::Builder::new()
        .name(format!("shard-{index}"))
        .spawn(move || {
            // Reports the thread's end, also when it unwinds.
            struct ExitGuard(usize, flume::Sender<ShardEvent>);
            impl Drop for ExitGuard {
                fn drop(&mut self) {
                    let _ = self.1.send(ShardEvent::Exited {
                        index: self.0,
                        panicked: std::thread::panicking(),
                    });
                }
            }
            let _guard = ExitGuard(index, events.clone());
            let placement = cpu.map_or(Placement::Unbound, Placement::Fixed);
            let executor = match LocalExecutorBuilder::new(placement)
                .name(&format!("shard-{index}"))
                .io_memory(IO_MEMORY)
                .ring_depth(256)
                .make()
            {
                Ok(ex) => ex,
                Err(e) => {
                    let _ = events.send(ShardEvent::FailedToStart(ShardError::Executor {
                        index,
                        reason: e.to_string(),
                    }));
                    return;
                }
            };
            let _ = events.send(ShardEvent::Started(index));
            executor.run(async move {
                let shard = Rc::new(Shard::new(index, shared));
                while let Ok(command) = inbox_rx.recv_async().await {
                    match command {
                        ShardCommand::Listen { addr, reply } => {
                            let _ = reply.send(shard.listen(addr));
                        }
                        ShardCommand::StopListening { port, reply } => {
                            let _ = reply.send(shard.stop_listening(port));
                        }
                        ShardCommand::Shutdown => break,
                    }
                }
            });
        })?;
    Ok(ShardHandle {
        index,
        inbox: inbox_tx,
    })
}
