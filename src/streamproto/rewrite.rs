//! Broker address rewriting: the only two server frames that name brokers,
//! the Open response (`advertised_host`, `advertised_port`) and the Metadata
//! response's broker list, are mapped through one [`AddressMap`] from each
//! broker node's stream endpoint to the proxy endpoint that leads to it.
//!
//! Both frames go through the same lookup, so a client that compares Open's
//! advertised address with a Metadata entry (as the Java and Go clients do
//! to find the node they want) sees the same proxy endpoint in both. An
//! address missing from the map is left as the broker wrote it and counted,
//! so the session can log it. Pure functions: no I/O, no clock.

use super::command::{
    property, MetadataResponse, OpenResponse, Properties, ADVERTISED_HOST, ADVERTISED_PORT,
};
use super::StreamDecodeError;

/// A host (name or address, as text) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Endpoint {
            host: host.into(),
            port,
        }
    }
}

/// Broker stream endpoints to the proxy endpoints in front of them. Host
/// names compare without case (DNS names are case-insensitive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressMap {
    entries: Vec<(Endpoint, Endpoint)>,
}

impl AddressMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `broker` to `proxy`, replacing an earlier mapping of `broker`.
    pub fn insert(&mut self, broker: Endpoint, proxy: Endpoint) {
        match self.entries.iter_mut().find(|(b, _)| same(b, &broker)) {
            Some(entry) => entry.1 = proxy,
            None => self.entries.push((broker, proxy)),
        }
    }

    pub fn lookup(&self, host: &str, port: u16) -> Option<&Endpoint> {
        self.entries
            .iter()
            .find(|(b, _)| b.port == port && b.host.eq_ignore_ascii_case(host))
            .map(|(_, p)| p)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn same(a: &Endpoint, b: &Endpoint) -> bool {
    a.port == b.port && a.host.eq_ignore_ascii_case(&b.host)
}

/// How many addresses a rewrite changed and how many it could not map.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RewriteCount {
    pub rewritten: usize,
    pub unmapped: usize,
}

/// Rewrites an Open response's advertised address in place. A response
/// without one (a refusal) is left alone and counts nothing.
pub fn rewrite_open_properties(properties: &mut Properties, map: &AddressMap) -> RewriteCount {
    let advertised = property(properties, ADVERTISED_HOST)
        .zip(property(properties, ADVERTISED_PORT).and_then(|p| p.parse::<u16>().ok()));
    let Some((host, port)) = advertised else {
        let has_any = property(properties, ADVERTISED_HOST).is_some()
            || property(properties, ADVERTISED_PORT).is_some();
        return RewriteCount {
            rewritten: 0,
            unmapped: usize::from(has_any),
        };
    };
    let Some(proxy) = map.lookup(host, port).cloned() else {
        return RewriteCount {
            rewritten: 0,
            unmapped: 1,
        };
    };
    for (k, v) in properties.iter_mut() {
        if k == ADVERTISED_HOST {
            v.clone_from(&proxy.host);
        } else if k == ADVERTISED_PORT {
            *v = proxy.port.to_string();
        }
    }
    RewriteCount {
        rewritten: 1,
        unmapped: 0,
    }
}

/// [`rewrite_open_properties`] on a decoded Open response.
pub fn rewrite_open(response: &mut OpenResponse, map: &AddressMap) -> RewriteCount {
    rewrite_open_properties(&mut response.properties, map)
}

/// Rewrites every broker of a Metadata response in place. References and
/// the stream list are untouched, so leaders and replicas keep their nodes.
pub fn rewrite_metadata(response: &mut MetadataResponse, map: &AddressMap) -> RewriteCount {
    let mut count = RewriteCount::default();
    for broker in &mut response.brokers {
        let proxy = u16::try_from(broker.port)
            .ok()
            .and_then(|port| map.lookup(&broker.host, port));
        match proxy {
            Some(p) => {
                broker.host.clone_from(&p.host);
                broker.port = u32::from(p.port);
                count.rewritten += 1;
            }
            None => count.unmapped += 1,
        }
    }
    count
}

/// Decodes a Metadata response body (after key and version), rewrites it
/// and appends the whole rewritten frame to `out`: what the data path does
/// with each Metadata response from the broker.
pub fn rewrite_metadata_frame(
    body: &[u8],
    map: &AddressMap,
    out: &mut Vec<u8>,
) -> Result<RewriteCount, StreamDecodeError> {
    let mut response = MetadataResponse::decode(body)?;
    let count = rewrite_metadata(&mut response, map);
    response.encode(out);
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streamproto::command::{MetadataBroker, StreamMetadata};
    use crate::streamproto::{response_code, split_frame};
    use proptest::prelude::*;

    fn map() -> AddressMap {
        let mut m = AddressMap::new();
        m.insert(Endpoint::new("node-a", 5552), Endpoint::new("proxy", 15001));
        m.insert(
            Endpoint::new("127.0.0.22", 5552),
            Endpoint::new("proxy", 15002),
        );
        m
    }

    fn props(host: &str, port: &str) -> Properties {
        vec![
            (ADVERTISED_PORT.to_string(), port.to_string()),
            (ADVERTISED_HOST.to_string(), host.to_string()),
        ]
    }

    #[test]
    fn open_and_metadata_agree_on_every_node() {
        let mut open = props("NODE-A", "5552");
        assert_eq!(
            rewrite_open_properties(&mut open, &map()),
            RewriteCount {
                rewritten: 1,
                unmapped: 0
            }
        );
        assert_eq!(open, props("proxy", "15001"));
        let mut md = MetadataResponse {
            correlation_id: 3,
            brokers: vec![
                MetadataBroker {
                    reference: 0,
                    host: "node-a".into(),
                    port: 5552,
                },
                MetadataBroker {
                    reference: 1,
                    host: "127.0.0.22".into(),
                    port: 5552,
                },
                MetadataBroker {
                    reference: 2,
                    host: "node-c".into(),
                    port: 5552,
                },
            ],
            streams: vec![StreamMetadata {
                name: "s".into(),
                code: response_code::OK,
                leader: 1,
                replicas: vec![0, 2],
            }],
        };
        let before = md.clone();
        assert_eq!(
            rewrite_metadata(&mut md, &map()),
            RewriteCount {
                rewritten: 2,
                unmapped: 1
            }
        );
        assert_eq!(
            (md.brokers[0].host.as_str(), md.brokers[0].port),
            ("proxy", 15001)
        );
        assert_eq!(md.brokers[1].port, 15002);
        assert_eq!(md.brokers[2], before.brokers[2]);
        assert_eq!(md.streams, before.streams);
    }

    #[test]
    fn open_without_address_or_with_unknown_one_is_left_alone() {
        let mut none = Properties::new();
        assert_eq!(
            rewrite_open_properties(&mut none, &map()),
            RewriteCount::default()
        );
        let mut other = props("node-a", "5553");
        assert_eq!(rewrite_open_properties(&mut other, &map()).unmapped, 1);
        assert_eq!(other, props("node-a", "5553"));
        let mut bad_port = props("node-a", "x");
        assert_eq!(rewrite_open_properties(&mut bad_port, &map()).unmapped, 1);
    }

    #[test]
    fn insert_replaces_case_insensitively() {
        let mut m = map();
        m.insert(Endpoint::new("Node-A", 5552), Endpoint::new("p2", 1));
        assert_eq!(m.len(), 2);
        assert_eq!(m.lookup("node-a", 5552), Some(&Endpoint::new("p2", 1)));
    }

    proptest! {
        /// Rewriting a frame gives a frame that decodes to the rewritten
        /// value, with every mapped broker replaced and nothing else changed.
        #[test]
        fn metadata_frame_rewrite_round_trips(
            hosts in proptest::collection::vec(
                prop_oneof![Just("node-a".to_string()), Just("127.0.0.22".to_string()), "[a-z]{1,8}"],
                0..5),
            streams in proptest::collection::vec(("[a-z]{0,10}", any::<u16>(), any::<u16>(),
                proptest::collection::vec(any::<u16>(), 0..4)), 0..4),
        ) {
            let md = MetadataResponse {
                correlation_id: 9,
                brokers: hosts.iter().enumerate().map(|(i, h)| MetadataBroker {
                    reference: i as u16, host: h.clone(), port: 5552 }).collect(),
                streams: streams.into_iter().map(|(name, code, leader, replicas)| StreamMetadata {
                    name, code, leader, replicas }).collect(),
            };
            let mut frame = Vec::new();
            md.encode(&mut frame);
            let (f, _) = split_frame(&frame, u32::MAX).unwrap().unwrap();
            let mut out = Vec::new();
            let count = rewrite_metadata_frame(f.body, &map(), &mut out).unwrap();
            let (g, used) = split_frame(&out, u32::MAX).unwrap().unwrap();
            prop_assert_eq!(used, out.len());
            let got = MetadataResponse::decode(g.body).unwrap();
            let mut expected = md.clone();
            prop_assert_eq!(rewrite_metadata(&mut expected, &map()), count);
            prop_assert_eq!(got, expected);
            prop_assert_eq!(count.rewritten + count.unmapped, hosts.len());
        }
    }
}
