//! Both control-plane sides of a hitless upgrade
//! (docs/deployment.md#upgrading-without-refusing-connections).
//!
//! Old process: [`serve_handoff`] answers `UPGRADE HANDOFF` on the control
//! connection it came on (the sockets travel on that connection, so it
//! cannot be an ordinary reply), then watches that connection: if the new
//! process goes away before `UPGRADE RELEASE`, the handover is abandoned and
//! this process carries on as if it had never happened. [`release`] answers
//! `UPGRADE RELEASE`: it stops every accept through its gate without
//! cancelling one and completes those still in flight; the supervisor then
//! drains. While handed over, configuration changes and a second handoff
//! are refused: the new process has a copy and would never see them.
//!
//! New process: [`Adoption`] holds the received sockets until the replayed
//! `LISTEN START` of their port gives them to the shards the plan names.
//!
//! Runs on control threads, never on a shard; never binds or shuts down a
//! listening socket (the shards own them).

use super::{ControlState, Reply};
use crate::handoff::wire::Handoff;
use crate::handoff::{self, AcceptGate, DummyClients, HandedListener};
use crate::shard::{HandedSocket, ShardCommand};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

/// Where this process stands in an upgrade, as the old process.
#[derive(Debug, Default)]
pub enum UpgradeState {
    /// No handover under way.
    #[default]
    Serving,
    /// The sockets and configuration went to a new process, which has not
    /// released this one yet. Holds every handed socket's address and gate.
    HandedOff {
        gates: Vec<(SocketAddr, Arc<AcceptGate>)>,
    },
    /// `UPGRADE RELEASE` came: this process no longer accepts and drains.
    Released,
}

impl UpgradeState {
    /// Handed off or released: the control socket path and the
    /// configuration belong to the new process now.
    pub fn handed_off(&self) -> bool {
        !matches!(self, UpgradeState::Serving)
    }
}

/// The reply to a configuration change while handed over.
pub fn refuse_change() -> Reply {
    Reply::error(
        "Refused: this proxy has handed its listeners and configuration to a new process \
         (UPGRADE HANDOFF); make changes there.\n",
    )
}

/// Old side of `UPGRADE HANDOFF`, on the control connection it came on.
/// Returns once the new process has closed that connection.
pub fn serve_handoff(stream: UnixStream, state: &Mutex<ControlState>) {
    let lock = || state.lock().unwrap_or_else(|p| p.into_inner());
    let prepared = {
        let mut state = lock();
        prepare(&mut state)
    };
    let (description, sockets) = match prepared {
        Ok(prepared) => prepared,
        Err(reply) => {
            log::warn!(
                "Control 'UPGRADE HANDOFF' refused: {}",
                reply.text.trim_end()
            );
            let _ = (&stream).write_all(reply.text.as_bytes());
            return;
        }
    };
    let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|fd| fd.as_fd()).collect();
    if let Err(e) = handoff::send_handoff(&stream, &description, &fds) {
        log::warn!("UPGRADE HANDOFF: sending the listeners failed ({e}); serving on");
        abandon(&mut lock());
        return;
    }
    // Our duplicates are not needed any more: the new process has its own.
    drop(fds);
    drop(sockets);
    log::info!(
        "UPGRADE HANDOFF: handed {} listening sockets and the configuration to a new process",
        description.listeners.len()
    );
    // The new process keeps this connection open until it has released
    // us; it ends earlier only if that process failed or was killed.
    let _ = stream.set_read_timeout(None);
    let _ = (&stream).read_to_end(&mut Vec::new());
    let mut state = lock();
    if matches!(state.upgrade, UpgradeState::HandedOff { .. }) {
        log::warn!(
            "UPGRADE HANDOFF: the new process went away before releasing this one; serving on"
        );
        abandon(&mut state);
    }
}

/// Marks every shard's listeners as shared and collects the description,
/// the duplicates and the gates. Refused when already handed over or a
/// shard does not answer (then nothing is left marked).
fn prepare(state: &mut ControlState) -> Result<(Handoff, Vec<OwnedFd>), Reply> {
    if state.upgrade.handed_off() {
        return Err(Reply::error(
            "Refused: the listeners were already handed to a new process (UPGRADE HANDOFF).\n",
        ));
    }
    let replies = state.ask_shards(|reply| ShardCommand::HandOver {
        handed: true,
        reply,
    });
    if replies.iter().any(Option::is_none) {
        abandon(state);
        return Err(Reply::error(
            "Refused: a shard did not answer; nothing was handed over.\n",
        ));
    }
    let sockets: Vec<HandedSocket> = replies.into_iter().flatten().flatten().collect();
    let mut listeners = Vec::with_capacity(sockets.len());
    let mut fds = Vec::with_capacity(sockets.len());
    let mut gates = Vec::with_capacity(sockets.len());
    for socket in sockets {
        listeners.push(HandedListener {
            addr: socket.local,
            kind: socket.kind,
            shard: socket.shard,
        });
        gates.push((socket.local, socket.gate));
        fds.push(socket.fd);
    }
    state.upgrade = UpgradeState::HandedOff { gates };
    let description = Handoff {
        listeners,
        config: super::render::dump(&state.config),
    };
    Ok((description, fds))
}

/// Takes a handover back: the listeners are this process's alone again.
fn abandon(state: &mut ControlState) {
    state.upgrade = UpgradeState::Serving;
    let _ = state.ask_shards(|reply| ShardCommand::HandOver {
        handed: false,
        reply,
    });
}

/// Old side of `UPGRADE RELEASE`: stops accepting on every handed socket
/// (never cancelling an accept in flight) and replies once no accept is
/// armed; the caller then starts the drain.
pub fn release(state: &Mutex<ControlState>) -> Reply {
    let gates = {
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut state.upgrade, UpgradeState::Released) {
            UpgradeState::HandedOff { gates } => gates,
            other => {
                let released = matches!(other, UpgradeState::Released);
                state.upgrade = other;
                return Reply::error(if released {
                    "Already released.\n"
                } else {
                    "Nothing was handed over: UPGRADE RELEASE follows UPGRADE HANDOFF.\n"
                });
            }
        }
    };
    let settled = settle(&gates);
    Reply::ok(format!(
        "Released: stopped accepting on {settled} of {} listening sockets; draining.\n",
        gates.len()
    ))
}

/// Stops every gate and completes the accepts still in flight; returns how
/// many sockets have no accept armed any more. One that is given up on is
/// logged: its accept is dropped at exit, the trap the gates avoid.
pub fn settle(gates: &[(SocketAddr, Arc<AcceptGate>)]) -> usize {
    let outcomes = handoff::release_listeners(gates, &DummyClients::default());
    let mut settled = 0;
    for ((addr, _), (_, outcome)) in gates.iter().zip(outcomes) {
        match outcome {
            Ok(dummies) => {
                settled += 1;
                log::debug!("Stopped accepting on {addr} ({dummies} dummy connections)");
            }
            Err(e) => log::error!("Stopping the accepts on {addr}: {e}"),
        }
    }
    settled
}

/// The new process's received sockets, waiting for the replayed
/// `LISTEN START` of their port.
#[derive(Debug)]
pub struct Adoption {
    /// Taken out as their port is adopted.
    sockets: Vec<Option<(OwnedFd, HandedListener)>>,
    /// For each shard, the indexes into `sockets` it serves.
    plan: Vec<Vec<usize>>,
    /// Each handed-over port's bound address, as the sockets say.
    bound: std::collections::BTreeMap<u16, SocketAddr>,
}

impl Adoption {
    pub fn new(received: Vec<(OwnedFd, HandedListener)>, shards: usize) -> Adoption {
        let described: Vec<HandedListener> = received.iter().map(|(_, l)| *l).collect();
        Adoption {
            plan: handoff::plan::assign(&described, shards),
            bound: described.iter().map(|l| (l.addr.port(), l.addr)).collect(),
            sockets: received.into_iter().map(Some).collect(),
        }
    }

    /// Each handed-over port and the address its sockets are bound to: a
    /// socket of one's own joins the port's group only at that address.
    pub fn bound_addrs(&self) -> std::collections::BTreeMap<u16, SocketAddr> {
        self.bound.clone()
    }

    /// The sockets of `port`, per shard (an empty list for a shard the plan
    /// gives none), or `None` when no socket of that port was handed over.
    pub fn take_port(&mut self, port: u16) -> Option<Vec<Vec<OwnedFd>>> {
        let any = self
            .sockets
            .iter()
            .flatten()
            .any(|(_, l)| l.addr.port() == port);
        if !any {
            return None;
        }
        let per_shard = self
            .plan
            .iter()
            .map(|held| {
                held.iter()
                    .filter_map(|&i| {
                        let matches =
                            matches!(&self.sockets[i], Some((_, l)) if l.addr.port() == port);
                        matches.then(|| self.sockets[i].take()).flatten()
                    })
                    .map(|(fd, _)| fd)
                    .collect()
            })
            .collect();
        Some(per_shard)
    }

    /// Ports handed over that no replayed `LISTEN START` asked for.
    pub fn unclaimed_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .sockets
            .iter()
            .flatten()
            .map(|(_, l)| l.addr.port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard::ListenerKind;
    use std::net::TcpListener;

    fn received(ports: &[u16]) -> (Vec<TcpListener>, Vec<(OwnedFd, HandedListener)>) {
        let keep: Vec<TcpListener> = ports
            .iter()
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let handed = keep
            .iter()
            .zip(ports)
            .enumerate()
            .map(|(shard, (l, &port))| {
                (
                    OwnedFd::from(l.try_clone().unwrap()),
                    HandedListener {
                        addr: SocketAddr::from(([0, 0, 0, 0], port)),
                        kind: ListenerKind::default(),
                        shard,
                    },
                )
            })
            .collect();
        (keep, handed)
    }

    #[test]
    fn a_port_is_taken_once_and_spread_over_the_shards() {
        let (_keep, handed) = received(&[5672, 5672, 5671, 5672]);
        let mut adoption = Adoption::new(handed, 2);
        let port = adoption.take_port(5672).expect("5672 was handed over");
        assert_eq!(port.len(), 2);
        assert_eq!(port.iter().map(Vec::len).sum::<usize>(), 3);
        assert!(port.iter().all(|s| !s.is_empty()));
        assert!(adoption.take_port(5672).is_none(), "taken already");
        assert!(adoption.take_port(1).is_none());
        assert_eq!(adoption.unclaimed_ports(), [5671]);
        let other = adoption.take_port(5671).unwrap();
        assert_eq!(other.iter().map(Vec::len).sum::<usize>(), 1);
        assert!(adoption.unclaimed_ports().is_empty());
    }

    #[test]
    fn more_shards_than_sockets_leave_some_shards_without() {
        let (_keep, handed) = received(&[5672, 5672]);
        let mut adoption = Adoption::new(handed, 4);
        let port = adoption.take_port(5672).unwrap();
        assert_eq!(port.iter().map(Vec::len).collect::<Vec<_>>(), [1, 1, 0, 0]);
    }

    #[test]
    fn handed_off_states() {
        assert!(!UpgradeState::Serving.handed_off());
        assert!(UpgradeState::Released.handed_off());
        assert!(UpgradeState::HandedOff { gates: vec![] }.handed_off());
        assert!(refuse_change().error);
    }
}
