//! Which shard of the new process accepts on which handed-over socket,
//! pure. The old process had one SO_REUSEPORT socket per shard and port;
//! the new one may run a different number of shards. Every handed-over
//! socket must get exactly one accept loop in the new process: once the old
//! process stops accepting, connections the kernel hashes to a socket that
//! nobody accepts on would wait in its queue for ever.
//!
//! Never binds fresh sockets for a handed-over port: a fresh socket joins
//! the port's group and takes connections at once, and if the new process
//! then failed before the release, closing it would reset them.

use super::wire::HandedListener;

/// For each new shard, the indexes (into the handed-over list) of the
/// sockets it accepts on. Sockets of one port go round-robin over the
/// shards, each port starting where the previous one ended, so with more
/// sockets than shards no shard holds two of a port before every shard
/// holds one, and with fewer the load still spreads across ports.
pub fn assign(listeners: &[HandedListener], shards: usize) -> Vec<Vec<usize>> {
    let mut plan = vec![Vec::new(); shards.max(1)];
    let mut next = 0;
    let mut order: Vec<usize> = (0..listeners.len()).collect();
    // Group by port, keeping the old shard order within a port, so the
    // round-robin above is per port whatever order the sockets came in.
    order.sort_by_key(|&i| (listeners[i].addr.port(), listeners[i].shard));
    for i in order {
        plan[next].push(i);
        next = (next + 1) % plan.len();
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ingress::ListenerKind;
    use std::collections::BTreeMap;

    fn sockets(ports: &[u16], per_port: usize) -> Vec<HandedListener> {
        ports
            .iter()
            .flat_map(|&port| {
                (0..per_port).map(move |shard| HandedListener {
                    addr: ([0, 0, 0, 0], port).into(),
                    kind: ListenerKind::default(),
                    shard,
                })
            })
            .collect()
    }

    /// Every socket exactly once, and per port no shard holds more than
    /// its share rounded up.
    fn check(listeners: &[HandedListener], shards: usize) {
        let plan = assign(listeners, shards);
        assert_eq!(plan.len(), shards.max(1));
        let mut seen: Vec<usize> = plan.iter().flatten().copied().collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..listeners.len()).collect::<Vec<_>>());
        let mut per_port: BTreeMap<u16, usize> = BTreeMap::new();
        for l in listeners {
            *per_port.entry(l.addr.port()).or_default() += 1;
        }
        for (port, count) in per_port {
            let share = count.div_ceil(shards.max(1));
            for held in &plan {
                let of_port = held
                    .iter()
                    .filter(|&&i| listeners[i].addr.port() == port)
                    .count();
                assert!(
                    of_port <= share,
                    "a shard holds {of_port} sockets of port {port}"
                );
            }
        }
    }

    #[test]
    fn as_many_shards_as_sockets_gives_one_each() {
        let listeners = sockets(&[5672], 4);
        assert_eq!(assign(&listeners, 4), [[0], [1], [2], [3]]);
    }

    #[test]
    fn fewer_shards_take_several() {
        check(&sockets(&[5672, 5671], 8), 3);
        assert_eq!(assign(&sockets(&[5672], 4), 2), [[0, 2], [1, 3]]);
    }

    #[test]
    fn more_shards_than_sockets_spread_ports_over_shards() {
        let listeners = sockets(&[5672, 5671], 2);
        check(&listeners, 4);
        // 5671's sockets (indexes 2, 3) first, then 5672's: all four shards
        // accept on something.
        assert_eq!(assign(&listeners, 4), [[2], [3], [0], [1]]);
    }

    #[test]
    fn zero_shards_is_treated_as_one() {
        assert_eq!(assign(&sockets(&[1], 2), 0), [[0, 1]]);
    }

    #[test]
    fn every_mix_is_covered_once() {
        for ports in 0..4u16 {
            for per_port in 0..6 {
                for shards in 0..9 {
                    let ports: Vec<u16> = (1..=ports).collect();
                    check(&sockets(&ports, per_port), shards);
                }
            }
        }
    }
}
