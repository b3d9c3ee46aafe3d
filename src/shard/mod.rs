//! Shards: one glommio executor per core, pinned, each with its own
//! SO_REUSEPORT listeners, its own sessions, buffer pool and DNS cache
//! (docs/architecture.md).
//!
//! The control thread talks to a shard only through its inbox
//! ([`ShardCommand`], each with a reply channel) and the shared
//! [`Shared`] state (an `ArcSwap` of the configuration snapshot and a few
//! immutable settings). A connection the kernel gave to a busier shard is
//! handed, before its session starts, to one with fewer live connections
//! ([`Balance`]); sessions never leave their shard. Nothing here blocks:
//! the inbox is awaited, never polled with a sleep.

mod balance;

pub use balance::{Balance, Handed};

use crate::handoff::AcceptGate;
use crate::net;
use crate::session::control::Ending;
use crate::session::{self, SessionId, SessionInfo, ShardContext};
use crate::tls::ingress::Incoming;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use socket2::SockRef;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

pub use crate::session::Shared;
pub use crate::tls::ingress::ListenerKind;

/// A request to one shard, answered on its reply channel.
pub enum ShardCommand {
    /// Open this shard's listener on the address.
    Listen {
        addr: SocketAddr,
        kind: ListenerKind,
        reply: flume::Sender<Result<(), ListenError>>,
    },
    /// Close this shard's listener on the port, or all of them.
    StopListening {
        port: Option<u16>,
        reply: flume::Sender<Vec<u16>>,
    },
    /// Describe every session of this shard (for `CONN`, `VHOST PRINT`).
    Sessions {
        reply: flume::Sender<Vec<SessionView>>,
    },
    /// Act on the sessions selected; replies with how many matched.
    Act {
        target: SessionTarget,
        action: SessionAction,
        reply: flume::Sender<usize>,
    },
    /// What this shard's sessions moved since the last collection, and
    /// its gauges (the statistics tick, see `crate::stats`).
    CollectStats {
        reply: flume::Sender<crate::stats::ShardReport>,
    },
    /// Install a `TRACE` filter (or none); replies with how many sessions
    /// are traced now.
    Trace {
        filter: Option<crate::stats::trace::TraceFilter>,
        reply: flume::Sender<usize>,
    },
    /// Hitless upgrade, old side: `handed: true` marks every listening
    /// socket as shared with a new process (never shut down, accepts
    /// stopped only through their gates) and replies with a duplicate of
    /// each; `handed: false` takes the mark back after an abandoned
    /// handover and replies with nothing.
    HandOver {
        handed: bool,
        reply: flume::Sender<Vec<HandedSocket>>,
    },
    /// Hitless upgrade, new side: serve these handed-over sockets of one
    /// port (none binds afresh). They accept nothing until
    /// [`ShardCommand::StartAdopted`].
    Adopt {
        addr: SocketAddr,
        kind: ListenerKind,
        sockets: Vec<OwnedFd>,
        reply: flume::Sender<Result<(), ListenError>>,
    },
    /// Hitless upgrade, new side, once the old process has let go: start
    /// accepting on every adopted socket. Replies with how many started.
    StartAdopted { reply: flume::Sender<usize> },
    /// Connections accepted and not yet ended: sessions, and those still
    /// in their TLS or PROXY step, before they are sessions. A drain waits
    /// for this to reach zero.
    Connections { reply: flume::Sender<usize> },
    /// Move the sessions the configuration in force no longer places on
    /// their backend (sent after every change to routing); replies with
    /// how many were asked to move.
    MoveMisplaced { reply: flume::Sender<usize> },
    /// Move the sessions connected to an address a DNS backend's host no
    /// longer resolves to; replies with how many.
    MoveLeftResolution {
        answer: session::moving::DnsAnswer,
        reply: flume::Sender<usize>,
    },
    /// Leave the executor: the process is exiting.
    Shutdown,
}

/// A duplicate of one listening socket, for the takeover exchange, with
/// what a new process needs to know about it and the gate that stops this
/// process's accepts on it.
#[derive(Debug)]
pub struct HandedSocket {
    pub fd: OwnedFd,
    /// The address the socket is bound to (from the socket itself).
    pub local: SocketAddr,
    pub kind: ListenerKind,
    pub shard: usize,
    pub gate: Arc<AcceptGate>,
}

/// Which sessions an action applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionTarget {
    Id(SessionId),
    Vhost(String),
    /// Every session of the shard (draining at shutdown).
    All,
}

/// What the operator asked of a session (docs/commands.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAction {
    Pause,
    Unpause,
    End(Ending),
    /// The session's own data rate (`SESSION id LIMIT`), or none.
    DataRate(Option<u64>),
}

/// A copy of one session's state, made on its shard for the control thread.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionView {
    pub id: SessionId,
    pub shard: usize,
    pub vhost: String,
    pub phase: String,
    /// `proxied` or `transparent`.
    pub handshake: &'static str,
    /// `amqp` or `stream`.
    pub protocol: &'static str,
    pub disconnected: bool,
    pub paused: bool,
    pub auth_denied: bool,
    /// A data-rate limit (its vhost's or its own) applies to it now.
    pub shaped: bool,
    pub ingress_remote: SocketAddr,
    pub ingress_local: SocketAddr,
    pub egress_local: Option<SocketAddr>,
    pub egress_remote: Option<SocketAddr>,
    pub backend: String,
    /// `farm <name>` or `backend <name>`: what chose the backend.
    pub via: Option<String>,
    /// Its backend is drained (`BACKEND DRAIN`) in the configuration now.
    pub backend_drained: bool,
    /// Told to leave its backend (Close 320 sent or about to be).
    pub moving: bool,
    pub in_bytes: u64,
    pub in_frames: u64,
    pub in_packets: u64,
    pub out_bytes: u64,
    pub out_frames: u64,
    pub out_packets: u64,
    /// Mean pass-through write latency each way, once a write completed.
    pub in_avg_latency_ms: Option<f64>,
    pub out_avg_latency_ms: Option<f64>,
    /// Seconds since the client, and the broker, last sent anything.
    pub ingress_idle_secs: f64,
    pub egress_idle_secs: f64,
}

impl SessionView {
    fn of(shard: usize, s: &SessionInfo, config: &crate::config::Config) -> SessionView {
        let backend = s.backend.borrow().clone();
        SessionView {
            id: s.id,
            shard,
            vhost: s.vhost.borrow().clone(),
            phase: format!("{:?}", s.phase.get()),
            handshake: s.handshake.get().name(),
            protocol: s.protocol.get().name(),
            disconnected: s.disconnect.get() != crate::session::Disconnect::NotDisconnected
                || s.phase.get() == crate::session::Phase::BrokerDisconnected,
            paused: s.control.paused(),
            auth_denied: s.auth_denied.get(),
            shaped: s.admission.is_shaped(),
            ingress_remote: s.ingress_remote,
            ingress_local: s.ingress_local,
            egress_local: s.egress_local.get(),
            egress_remote: s.egress_remote.get(),
            backend_drained: config.drained.contains(&backend),
            backend,
            via: s.via.borrow().as_ref().map(|via| match via {
                crate::config::Mapping::Farm(f) => format!("farm {f}"),
                crate::config::Mapping::Backend(b) => format!("backend {b}"),
            }),
            moving: s.control.moving(),
            in_bytes: s.ingress.bytes.get(),
            in_frames: s.ingress.frames.get(),
            in_packets: s.ingress.packets.get(),
            out_bytes: s.egress.bytes.get(),
            out_frames: s.egress.frames.get(),
            out_packets: s.egress.packets.get(),
            in_avg_latency_ms: s.ingress.totals().avg_latency_ms(),
            out_avg_latency_ms: s.egress.totals().avg_latency_ms(),
            ingress_idle_secs: s.ingress.last_activity.get().elapsed().as_secs_f64(),
            egress_idle_secs: s.egress.last_activity.get().elapsed().as_secs_f64(),
        }
    }
}

/// The listening sockets of one port on this shard (one, or after a
/// takeover as many as the plan gave this shard), and the sender that stops
/// them.
struct RunningListener {
    /// Dropping it wakes every socket's task, which then ends.
    _stop: flume::Sender<()>,
    sockets: Vec<ListeningSocket>,
}

/// One listening socket and its accept task.
struct ListeningSocket {
    fd: RawFd,
    addr: SocketAddr,
    kind: ListenerKind,
    /// Arms every accept (docs/deployment.md#upgrading-without-refusing-connections).
    gate: Arc<AcceptGate>,
    /// Another process holds this socket too and may be accepting on it:
    /// it is never shut down (that would stop the other process's
    /// listener) and an armed accept is never cancelled.
    shared: Rc<Cell<bool>>,
    /// Adopted and not started yet: dropping it starts the accept loop.
    hold: Option<flume::Sender<()>>,
    task: glommio::task::JoinHandle<()>,
}

/// Why a shard could not open a listener.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ListenError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// One shard's state, owned by its executor thread: what its sessions
/// share, and its listeners.
pub struct Shard {
    /// Handed to every session the shard accepts.
    context: Rc<ShardContext>,
    /// Open listeners by port: the sender that stops one, and its task,
    /// which ends once the socket is closed.
    listeners: RefCell<BTreeMap<u16, RunningListener>>,
    /// Every shard's live connections (this one's is
    /// [`ShardCommand::Connections`]) and the way to hand one to another.
    balance: Arc<Balance>,
}

impl std::ops::Deref for Shard {
    type Target = ShardContext;
    fn deref(&self) -> &ShardContext {
        &self.context
    }
}

impl Shard {
    fn new(index: usize, shared: Arc<Shared>, balance: Arc<Balance>) -> Shard {
        Shard {
            context: Rc::new(ShardContext::new(index, shared)),
            listeners: RefCell::new(BTreeMap::new()),
            balance,
        }
    }

    /// Serves a connection from the moment it is accepted, here or by the
    /// shard that handed it over; it is counted as this shard's already.
    fn serve(context: &Rc<ShardContext>, balance: &Arc<Balance>, handed: Handed) {
        // SAFETY: an accepted TCP socket that this shard owns from now on.
        let tcp = unsafe { glommio::net::TcpStream::from_raw_fd(handed.socket.into_raw_fd()) };
        // Closed through the ring when dropped
        // (docs/sessions.md#pass-through).
        tcp.close_behind();
        let incoming = Incoming {
            tcp,
            peer: handed.peer,
        };
        let index = context.index;
        let balance = Arc::clone(balance);
        // A session's task holds a few words: its phases box their own
        // state, each where it is made, so none of it is ever copied.
        let session = session::run(Rc::clone(context), incoming, handed.port, handed.kind);
        glommio::spawn_local(async move {
            session.await;
            balance.ended(index);
        })
        .detach();
    }

    /// Serves the connections other shards hand to this one.
    fn take_handed(self: &Rc<Self>) {
        let Some(inbox) = self.balance.take_inbox(self.index) else {
            return;
        };
        let (context, balance) = (Rc::clone(&self.context), Arc::clone(&self.balance));
        glommio::spawn_local(async move {
            while let Ok(handed) = inbox.recv_async().await {
                Shard::serve(&context, &balance, handed);
            }
        })
        .detach();
    }

    fn listen(self: &Rc<Self>, addr: SocketAddr, kind: ListenerKind) -> Result<(), ListenError> {
        if self.listeners.borrow().contains_key(&addr.port()) {
            return Ok(());
        }
        let (listener, listener_fd) = net::bind_listener(addr, self.context.shared.session_sockets)
            .map_err(|source| ListenError { addr, source })?;
        let (stop_tx, stop_rx) = flume::bounded::<()>(1);
        let socket = self.serve_socket(listener, listener_fd, addr, kind, &stop_rx, false);
        self.listeners.borrow_mut().insert(
            addr.port(),
            RunningListener {
                _stop: stop_tx,
                sockets: vec![socket],
            },
        );
        Ok(())
    }

    /// Takes over handed-over sockets of one port; they accept once
    /// [`Shard::start_adopted`] runs.
    fn adopt(
        self: &Rc<Self>,
        addr: SocketAddr,
        kind: ListenerKind,
        sockets: Vec<OwnedFd>,
    ) -> Result<(), ListenError> {
        // A shard the plan gave no socket of this port stays without a
        // listener on it; it may bind one of its own once the old process
        // has let go (see `ShardCommand::Listen`).
        if sockets.is_empty() || self.listeners.borrow().contains_key(&addr.port()) {
            return Ok(());
        }
        let (stop_tx, stop_rx) = flume::bounded::<()>(1);
        let sockets = sockets
            .into_iter()
            .map(|fd| {
                // An older process may not have set the session options
                // on its listener; accepted sockets inherit them from it.
                if let Err(e) = net::tune_listener(&fd, self.context.shared.session_sockets) {
                    log::warn!("Shard {}: tuning a handed-over listener: {e}", self.index);
                }
                let local = SockRef::from(&fd)
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_socket())
                    .unwrap_or(addr);
                let raw = fd.into_raw_fd();
                // SAFETY: a listening TCP socket (checked when it was
                // received) that this shard owns from now on.
                let listener = unsafe { TcpListener::from_raw_fd(raw) };
                self.serve_socket(listener, raw, local, kind, &stop_rx, true)
            })
            .collect();
        self.listeners.borrow_mut().insert(
            addr.port(),
            RunningListener {
                _stop: stop_tx,
                sockets,
            },
        );
        Ok(())
    }

    /// Starts the accept loops of adopted sockets: the old process has
    /// stopped accepting on them, so they are this process's alone now.
    fn start_adopted(&self) -> usize {
        let mut started = 0;
        for listener in self.listeners.borrow_mut().values_mut() {
            for socket in &mut listener.sockets {
                if socket.hold.take().is_some() {
                    socket.shared.set(false);
                    started += 1;
                }
            }
        }
        started
    }

    /// Hitless upgrade, old side: see [`ShardCommand::HandOver`].
    fn hand_over(&self, handed: bool) -> Vec<HandedSocket> {
        let mut out = Vec::new();
        for listener in self.listeners.borrow().values() {
            for socket in &listener.sockets {
                socket.shared.set(handed);
                if !handed {
                    continue;
                }
                // SAFETY: the descriptor stays open while its listener is
                // in the table; the duplicate is independent of it.
                let fd = unsafe { BorrowedFd::borrow_raw(socket.fd) };
                match fd.try_clone_to_owned() {
                    Ok(fd) => out.push(HandedSocket {
                        fd,
                        local: socket.addr,
                        kind: socket.kind,
                        shard: self.index,
                        gate: Arc::clone(&socket.gate),
                    }),
                    Err(e) => log::error!(
                        "Shard {} cannot duplicate its listener on {}: {e}",
                        self.index,
                        socket.addr
                    ),
                }
            }
        }
        out
    }

    /// Spawns the accept loop of one listening socket. Each accept is
    /// armed through the socket's gate; an accepted connection is counted
    /// before the gate is told the accept is over, so a drain never sees
    /// "nothing armed, nothing connected" while one is in between.
    /// `adopted`: the socket came from the old process, which may still
    /// accept on it; the loop waits for `hold` to be dropped first.
    fn serve_socket(
        self: &Rc<Self>,
        listener: TcpListener,
        fd: RawFd,
        addr: SocketAddr,
        kind: ListenerKind,
        stop_rx: &flume::Receiver<()>,
        adopted: bool,
    ) -> ListeningSocket {
        let gate = Arc::new(AcceptGate::new());
        let shared = Rc::new(Cell::new(adopted));
        let (hold_tx, hold_rx) = flume::bounded::<()>(1);
        let context = Rc::clone(&self.context);
        let balance = Arc::clone(&self.balance);
        let stop_rx = stop_rx.clone();
        let port = addr.port();
        let task = glommio::spawn_local({
            let gate = Arc::clone(&gate);
            let shared = Rc::clone(&shared);
            async move {
                {
                    let accept_loop = async {
                        if adopted {
                            // Disconnected when the hold is dropped: start.
                            let _ = hold_rx.recv_async().await;
                        }
                        // Ours alone from here (an old process no longer
                        // accepts on it): one accept4 per connection.
                        if let Err(e) = listener.set_nonblocking_accept() {
                            log::warn!("Port {port}: accepting without O_NONBLOCK: {e}");
                        }
                        let mut backoff = crate::fdlimit::AcceptBackoff::default();
                        while gate.try_arm() {
                            match listener.shared_accept_with_peer().await {
                                Ok((accepted, peer)) => {
                                    if let Some(failures) = backoff.on_success() {
                                        log::info!(
                                            "Accepting on port {port} again after {failures} failed accepts"
                                        );
                                    }
                                    let handed = Handed {
                                        // SAFETY: the descriptor accept just made.
                                        socket: unsafe {
                                            OwnedFd::from_raw_fd(accepted.into_raw_fd())
                                        },
                                        peer,
                                        port,
                                        kind,
                                    };
                                    // Counted (here or by the shard it goes to)
                                    // before the gate hears the accept is over.
                                    let index = context.index;
                                    if let Err(handed) = balance.hand_over(index, handed) {
                                        balance.started(index);
                                        Shard::serve(&context, &balance, handed);
                                    }
                                    gate.disarm();
                                }
                                Err(e) => {
                                    gate.disarm();
                                    // Out of file descriptors, mostly: back off
                                    // (doubling, at most 1 s) and log only some
                                    // failures, so the log is not flooded while
                                    // the sessions already here keep being
                                    // served (docs/reliability.md#resource-limits).
                                    let step = backoff.on_failure();
                                    if step.log {
                                        log::warn!(
                                            "Accept on port {port} failed: {e} ({} in a row; next try in {} ms)",
                                            step.failures,
                                            step.delay.as_millis()
                                        );
                                    }
                                    glommio::timer::sleep(step.delay).await;
                                }
                            }
                        }
                    };
                    let mut accept_loop = std::pin::pin!(accept_loop);
                    let stopped = futures_lite::future::or(
                        async {
                            accept_loop.as_mut().await;
                            false
                        },
                        async {
                            let _ = stop_rx.recv_async().await;
                            true
                        },
                    )
                    .await;
                    if stopped && shared.get() && gate.armed() > 0 {
                        // Another process shares the socket: never cancel the
                        // armed accept (its connection would be lost); stop
                        // through the gate and let it complete, with a client
                        // or the releaser's dummy.
                        gate.stop();
                        accept_loop.as_mut().await;
                    }
                }
                if !shared.get() {
                    // The dropped accept is only a cancellation request:
                    // until io_uring completes it, the kernel keeps the
                    // socket listening and may hand a new connection to the
                    // cancelled accept, where nobody owns it. Shutting the
                    // socket down first ends that accept at once and
                    // refuses further connects, so the reply below is the
                    // truth. Never for a shared socket: a shutdown acts on
                    // the socket, in every process that holds it.
                    net::stop_listening(fd);
                }
                drop(listener);
                log::debug!("Shard {} stopped listening on {addr}", context.index);
            }
        })
        .detach();
        ListeningSocket {
            fd,
            addr,
            kind,
            gate,
            shared,
            hold: adopted.then_some(hold_tx),
            task,
        }
    }

    /// Applies an operator action to the matching sessions.
    fn act(&self, target: &SessionTarget, action: SessionAction) -> usize {
        let sessions = self.sessions.borrow();
        let matching: Vec<&Rc<SessionInfo>> = match target {
            SessionTarget::Id(id) => sessions.get(id).into_iter().collect(),
            SessionTarget::All => sessions.values().collect(),
            SessionTarget::Vhost(v) => sessions
                .values()
                .filter(|s| *s.vhost.borrow() == *v)
                .collect(),
        };
        for session in &matching {
            match action {
                SessionAction::Pause => session.control.set_paused(true),
                SessionAction::Unpause => session.control.set_paused(false),
                SessionAction::End(how) => session.control.end(how),
                SessionAction::DataRate(rate) => session.admission.shaping.set_rate(rate),
            }
        }
        matching.len()
    }

    /// Stops the listeners on `port` (or all) and replies once their
    /// sockets are closed, so a connect right after the reply is refused.
    fn stop_listening(&self, port: Option<u16>, reply: flume::Sender<Vec<u16>>) {
        let stopped: Vec<(u16, Vec<ListeningSocket>)> = {
            let mut listeners = self.listeners.borrow_mut();
            let ports: Vec<u16> = match port {
                Some(p) => listeners
                    .contains_key(&p)
                    .then_some(p)
                    .into_iter()
                    .collect(),
                None => listeners.keys().copied().collect(),
            };
            // Dropping each stop sender wakes its listener tasks.
            ports
                .into_iter()
                .filter_map(|p| listeners.remove(&p).map(|l| (p, l.sockets)))
                .collect()
        };
        glommio::spawn_local(async move {
            let mut ports = Vec::with_capacity(stopped.len());
            for (p, sockets) in stopped {
                for socket in sockets {
                    socket.task.await;
                }
                ports.push(p);
            }
            let _ = reply.send(ports);
        })
        .detach();
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

/// "1 shard" or "N shards", for log lines.
pub fn count_phrase(shards: usize) -> String {
    match shards {
        1 => "1 shard".to_string(),
        n => format!("{n} shards"),
    }
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
    spin_before_park: Duration,
    shared: Arc<Shared>,
    balance: Arc<Balance>,
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
                .spin_before_park(spin_before_park)
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
                let shard = Rc::new(Shard::new(index, shared, balance));
                shard.take_handed();
                while let Ok(command) = inbox_rx.recv_async().await {
                    match command {
                        ShardCommand::Listen { addr, kind, reply } => {
                            let _ = reply.send(shard.listen(addr, kind));
                        }
                        ShardCommand::StopListening { port, reply } => {
                            shard.stop_listening(port, reply);
                        }
                        ShardCommand::Sessions { reply } => {
                            let config = shard.shared.config.load();
                            let views = shard
                                .sessions
                                .borrow()
                                .values()
                                .map(|s| SessionView::of(index, s, &config.config))
                                .collect();
                            let _ = reply.send(views);
                        }
                        ShardCommand::Act {
                            target,
                            action,
                            reply,
                        } => {
                            let _ = reply.send(shard.act(&target, action));
                        }
                        ShardCommand::CollectStats { reply } => {
                            let _ = reply.send(shard.collect_stats());
                        }
                        ShardCommand::Trace { filter, reply } => {
                            let _ = reply.send(shard.set_trace(filter));
                        }
                        ShardCommand::HandOver { handed, reply } => {
                            let _ = reply.send(shard.hand_over(handed));
                        }
                        ShardCommand::Adopt {
                            addr,
                            kind,
                            sockets,
                            reply,
                        } => {
                            let _ = reply.send(shard.adopt(addr, kind, sockets));
                        }
                        ShardCommand::StartAdopted { reply } => {
                            let _ = reply.send(shard.start_adopted());
                        }
                        ShardCommand::Connections { reply } => {
                            let _ = reply.send(shard.balance.live(index));
                        }
                        ShardCommand::MoveMisplaced { reply } => {
                            let _ = reply.send(shard.move_misplaced());
                        }
                        ShardCommand::MoveLeftResolution { answer, reply } => {
                            let _ = reply.send(shard.move_left_resolution(&answer));
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
