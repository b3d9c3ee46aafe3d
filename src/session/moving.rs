//! Moving live sessions off a backend: after a routing change
//! (`BACKEND DRAIN`, `BACKEND DELETE`, `FARM DELETE`/`ADD`), and when an address
//! has left a DNS backend's answer, the shard finds its sessions that must
//! leave their broker and asks each to end with `Connection.Close` 320 at a
//! frame boundary (the SIGTERM drain's mechanism, `Ending::Move`), so the
//! client reconnects through the proxy and is routed to another member
//! (docs/routing.md#draining-a-backend). A client that never answers is cut
//! after the grace (`--drainTimeoutMs`), so a drained broker is not held
//! forever.
//!
//! Which sessions move is decided by `routing::misplaced`, a pure function;
//! this file only applies it to the shard's table. Runs on the shard;
//! never blocks, never touches a socket itself.

use super::control::Ending;
use super::{Phase, SessionInfo, ShardContext};
use crate::session_log;
use log::Level;
use std::fmt::Display;
use std::net::IpAddr;
use std::rc::Rc;

/// What a periodic lookup of a DNS backend's host found (never an empty or
/// failed answer: a lookup that fails moves nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    pub backend: String,
    /// The host and port the lookup was made for: if the backend was
    /// re-added with another host since, the answer is stale and ignored.
    pub host: String,
    pub port: u16,
    pub addresses: Vec<IpAddr>,
}

/// Whether a session is connected to a broker that it could be moved off:
/// its broker handshake is under way or done, and it is not already ending.
fn movable(info: &SessionInfo) -> bool {
    matches!(info.phase.get(), Phase::BrokerHandshake | Phase::Open)
        && info.control.ending().is_none()
}

impl ShardContext {
    /// Why `info` must leave its backend under the configuration in force,
    /// if it must.
    pub fn misplacement(&self, info: &SessionInfo) -> Option<crate::routing::Misplaced> {
        let via = info.via.borrow();
        let backend = info.backend.borrow();
        if backend.is_empty() {
            return None;
        }
        crate::routing::misplaced(
            &self.shared.config.load().config,
            &info.vhost.borrow(),
            via.as_ref()?,
            &backend,
        )
    }

    /// Moves every session of this shard that the configuration in force no
    /// longer places on its backend. Returns how many were asked to move.
    pub fn move_misplaced(&self) -> usize {
        let moving: Vec<(Rc<SessionInfo>, crate::routing::Misplaced)> = self
            .sessions
            .borrow()
            .values()
            .filter(|s| movable(s))
            .filter_map(|s| Some((Rc::clone(s), self.misplacement(s)?)))
            .collect();
        for (info, why) in &moving {
            self.move_session(info, why);
        }
        moving.len()
    }

    /// A session that finished connecting after a change that concerns its
    /// backend (it was routed by the snapshot before): moved at once.
    pub fn move_if_misplaced(&self, info: &Rc<SessionInfo>) {
        if info.control.ending().is_none() {
            if let Some(why) = self.misplacement(info) {
                self.move_session(info, &why);
            }
        }
    }

    /// Moves the sessions of `answer.backend` connected to an address its
    /// host no longer resolves to. Returns how many were asked to move.
    pub fn move_left_resolution(&self, answer: &DnsAnswer) -> usize {
        let current = self.shared.config.load();
        let still_same = current
            .config
            .backends
            .get(&answer.backend)
            .is_some_and(|b| b.is_dns() && b.host == answer.host && b.port == answer.port);
        if !still_same || answer.addresses.is_empty() {
            return 0;
        }
        let moving: Vec<(Rc<SessionInfo>, IpAddr)> = self
            .sessions
            .borrow()
            .values()
            .filter(|s| movable(s) && *s.backend.borrow() == answer.backend)
            .filter_map(|s| {
                let ip = s.egress_remote.get()?.ip();
                (!answer.addresses.contains(&ip)).then(|| (Rc::clone(s), ip))
            })
            .collect();
        for (info, ip) in &moving {
            let why = format!("address {ip} left the DNS answer for '{}'", answer.host);
            self.move_session(info, &why);
        }
        moving.len()
    }

    /// Asks one session to move, and cuts it after the grace if its client
    /// has not answered by then.
    fn move_session(&self, info: &Rc<SessionInfo>, why: &dyn Display) {
        session_log!(
            Level::Info,
            info,
            "Moving the session off backend '{}': {why}; the client is told to reconnect",
            info.backend.borrow()
        );
        info.control.end(Ending::Move);
        let grace = self.shared.move_grace;
        let session = Rc::downgrade(info);
        glommio::spawn_local(async move {
            glommio::timer::sleep(grace).await;
            // Gone from the table (and dropped) once it ended.
            if let Some(info) = session.upgrade() {
                if info.control.moving() {
                    session_log!(
                        Level::Warn,
                        &info,
                        "The client did not leave within {} ms of being moved; closing both sides",
                        grace.as_millis()
                    );
                    info.control.end(Ending::Force);
                }
            }
        })
        .detach();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, Config, ConfigSnapshot, Mapping, ProxyHeader};
    use crate::session::{SessionId, Shared};
    use std::sync::Arc;
    use std::time::Duration;

    fn backend(name: &str, host: &str, address: Option<IpAddr>) -> Backend {
        Backend {
            name: name.into(),
            datacenter: String::new(),
            host: host.into(),
            address,
            port: 5672,
            proxy_header: ProxyHeader::None,
            tls: false,
        }
    }

    fn shard(config: Config) -> ShardContext {
        let shared = Shared::new(
            ConfigSnapshot::new(config),
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        ShardContext::new(0, Arc::new(shared))
    }

    /// Backend `b2` in farm `f` (which also lists `gone`), the default.
    fn farm_config() -> Config {
        let mut config = Config::default();
        config
            .backends
            .insert("b2".into(), backend("b2", "h", Some([10, 0, 0, 9].into())));
        config.farms.insert(
            "f".into(),
            crate::config::Farm {
                name: "f".into(),
                selector: crate::config::BackendSelector::RoundRobin,
                members: vec!["gone".into(), "b2".into()],
                policies: Vec::new(),
                markers: Arc::new(Vec::new()),
            },
        );
        config.default_farm = Some("f".into());
        config
    }

    /// A session on `backend` at `addr`, in `phase`, chosen by farm `f`.
    fn session(ctx: &ShardContext, id: u64, backend: &str, addr: &str, phase: Phase) {
        let info = SessionInfo::new(
            SessionId(id),
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:5672".parse().unwrap(),
        );
        *info.backend.borrow_mut() = backend.into();
        *info.via.borrow_mut() = Some(Mapping::Farm("f".into()));
        info.egress_remote.set(Some(addr.parse().unwrap()));
        info.phase.set(phase);
        ctx.sessions
            .borrow_mut()
            .insert(SessionId(id), Rc::new(info));
    }

    fn moving(ctx: &ShardContext) -> Vec<u64> {
        ctx.sessions
            .borrow()
            .values()
            .filter(|s| s.control.moving())
            .map(|s| s.id.0)
            .collect()
    }

    /// Runs `f` on a glommio executor of its own (moving arms a timer).
    fn on_executor(f: impl FnOnce() + Send + 'static) {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 * 1024)
            .spawn(move || async move { f() })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn a_deleted_backend_moves_its_established_sessions_only() {
        on_executor(|| {
            let ctx = shard(farm_config());
            session(&ctx, 1, "gone", "10.0.0.8:5672", Phase::Open);
            session(&ctx, 2, "gone", "10.0.0.8:5672", Phase::ClientHandshake);
            session(&ctx, 3, "b2", "10.0.0.9:5672", Phase::Open);
            assert_eq!(ctx.move_misplaced(), 1);
            assert_eq!(moving(&ctx), [1]);
            // Already moving: not asked twice.
            assert_eq!(ctx.move_misplaced(), 0);
        });
    }

    #[test]
    fn an_address_that_left_the_answer_moves_its_sessions() {
        on_executor(|| {
            let mut config = Config::default();
            config
                .backends
                .insert("d".into(), backend("d", "rabbit.example", None));
            let ctx = shard(config);
            session(&ctx, 1, "d", "10.0.0.8:5672", Phase::Open);
            session(&ctx, 2, "d", "10.0.0.9:5672", Phase::Open);
            session(&ctx, 3, "other", "10.0.0.8:5672", Phase::Open);
            let answer = DnsAnswer {
                backend: "d".into(),
                host: "rabbit.example".into(),
                port: 5672,
                addresses: vec![[10, 0, 0, 9].into()],
            };
            // An answer for another host is stale: nothing moves.
            let stale = DnsAnswer {
                host: "old.example".into(),
                ..answer.clone()
            };
            assert_eq!(ctx.move_left_resolution(&stale), 0);
            assert_eq!(ctx.move_left_resolution(&answer), 1);
            assert_eq!(moving(&ctx), [1]);
        });
    }

    #[test]
    fn a_client_that_does_not_leave_is_cut_after_the_grace() {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(64 * 1024)
            .spawn(|| async {
                let shared = Shared::new(
                    ConfigSnapshot::new(farm_config()),
                    Duration::from_secs(1),
                    Duration::from_secs(1),
                )
                .with_move_grace(Duration::from_millis(20));
                let ctx = ShardContext::new(0, Arc::new(shared));
                session(&ctx, 1, "gone", "10.0.0.8:5672", Phase::Open);
                assert_eq!(ctx.move_misplaced(), 1);
                let info = Rc::clone(&ctx.sessions.borrow()[&SessionId(1)]);
                let deadline = std::time::Instant::now() + Duration::from_secs(10);
                while info.control.ending() != Some(Ending::Force) {
                    assert!(std::time::Instant::now() < deadline, "never forced");
                    glommio::timer::sleep(Duration::from_millis(5)).await;
                }
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
