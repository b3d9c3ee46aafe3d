//! Operator control of one live session: pause and the three ways to end it
//! (docs/sessions.md#operator-actions).
//!
//! The control thread never touches a session: its command reaches the
//! owning shard's inbox, the shard sets flags here and wakes the session's
//! task, and the pump acts at the next frame boundary. Single-threaded
//! (`Cell`, `RefCell`); never shared across shards.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::task::{Poll, Waker};

/// How an operator asked a session to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// `Connection.Close` 200 to the client, then to the broker, each
    /// waiting for its `CloseOk`.
    Graceful,
    /// Close only the broker side; the client side stays until it closes.
    BackendDisconnect,
    /// The proxy is shutting down (SIGTERM): like `Graceful`, but the
    /// client is told 320 so that it reconnects, to another proxy.
    Drain,
    /// Its backend was drained, deleted, taken out of the farm that chose
    /// it, or its address left the backend's DNS answer: like `Drain`, but
    /// the client is told that it reconnects through this proxy, which
    /// routes it to another member (docs/routing.md#draining-a-backend).
    Move,
    /// Close both sockets now, no AMQP frames.
    Force,
}

impl Ending {
    /// The `Connection.Close` the client gets for a gentle end.
    pub fn client_close(self) -> (u16, &'static str) {
        match self {
            Ending::Drain => (
                320,
                "CONNECTION_FORCED - amqpprox is shutting down, please reconnect",
            ),
            Ending::Move => (
                320,
                "CONNECTION_FORCED - amqpprox is moving this connection to another broker, please reconnect",
            ),
            _ => (200, "OK"),
        }
    }
}

/// Flags and a wake-up for one session.
#[derive(Default)]
pub struct SessionControl {
    paused: Cell<bool>,
    ending: Cell<Option<Ending>>,
    generation: Cell<u64>,
    wakers: RefCell<Vec<Waker>>,
}

impl std::fmt::Debug for SessionControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionControl")
            .field("paused", &self.paused.get())
            .field("ending", &self.ending.get())
            .finish()
    }
}

impl SessionControl {
    pub fn paused(&self) -> bool {
        self.paused.get()
    }

    pub fn ending(&self) -> Option<Ending> {
        self.ending.get()
    }

    /// Whether the session was asked to leave its backend (`CONN` shows it).
    pub fn moving(&self) -> bool {
        self.ending.get() == Some(Ending::Move)
    }

    pub fn set_paused(&self, paused: bool) {
        if self.paused.replace(paused) != paused {
            self.notify();
        }
    }

    /// Asks the session to end. A forced end overrides a gentler one
    /// already under way; a gentler one never overrides a forced one.
    pub fn end(&self, how: Ending) {
        let stronger = match (self.ending.get(), how) {
            (None, _) => true,
            (Some(Ending::Force), _) => false,
            (Some(_), Ending::Force) => true,
            (Some(_), _) => false,
        };
        if stronger {
            self.ending.set(Some(how));
            self.notify();
        }
    }

    /// A counter that moves on every change; take it before checking the
    /// flags, then wait with [`SessionControl::changed_since`], and no change
    /// is missed.
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Resolves once anything changed after `generation`.
    pub fn changed_since(&self, generation: u64) -> impl Future<Output = ()> + '_ {
        futures_lite::future::poll_fn(move |cx| {
            if self.generation.get() != generation {
                return Poll::Ready(());
            }
            let mut wakers = self.wakers.borrow_mut();
            if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                wakers.push(cx.waker().clone());
            }
            Poll::Pending
        })
    }

    fn notify(&self) {
        self.generation.set(self.generation.get() + 1);
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn force_overrides_graceful_but_not_the_reverse() {
        let c = SessionControl::default();
        c.end(Ending::Graceful);
        c.end(Ending::Force);
        assert_eq!(c.ending(), Some(Ending::Force));
        c.end(Ending::Graceful);
        assert_eq!(c.ending(), Some(Ending::Force));
    }

    #[test]
    fn changes_move_the_generation() {
        let c = SessionControl::default();
        let g = c.generation();
        c.set_paused(true);
        assert_ne!(c.generation(), g);
        let g = c.generation();
        c.set_paused(true); // no change, no wake-up
        assert_eq!(c.generation(), g);
    }
}
