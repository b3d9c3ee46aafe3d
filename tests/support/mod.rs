//! Shared harness for the integration tests: where a test's AMQP client
//! connects (a freshly spawned proxy, or RabbitMQ itself when
//! `AMQPPROX_TEST_TARGET=direct`), unique names, deterministic message bodies
//! and a per-test time limit; and, re-exported from the shared kit, the fake
//! broker, the raw client and the wait helpers.
//!
//! It owns no test logic and never skips: a test that needs RabbitMQ fails
//! loudly when the broker is missing. Each test crate uses a subset of these
//! helpers, hence the crate-wide `dead_code` allowance.
#![allow(dead_code)]

pub mod control;
pub mod proxy;
pub mod rabbit;
pub mod reactor;
pub mod relay;
pub mod stream;

// The fake broker, the raw client and the wait helpers live in the shared
// kit (`testkit/`, also used by the benchmark harness); these names keep
// `support::raw::...` and `support::dummy_broker::...` working. Each test
// crate uses a subset of them.
#[allow(unused_imports)]
pub use amqpprox_testkit::broker as dummy_broker;
#[allow(unused_imports)]
pub use amqpprox_testkit::wait::{
    self, deadline_in, idle_for, idle_for_async, poll_for, poll_for_async, poll_until,
    poll_until_async, poll_until_every, poll_until_every_async, settle, wait_for, wait_for_async,
    wait_until, wait_until_async, Deadline,
};
#[allow(unused_imports)]
pub use amqpprox_testkit::{raw, wire};

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use proxy::{ProxyBuilder, ProxyProcess};

/// Environment variable selecting where the clients connect.
pub const TARGET_ENV: &str = "AMQPPROX_TEST_TARGET";

/// The time limit given to one RabbitMQ test, so a hang fails instead of
/// blocking CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Where a test's AMQP clients connect: a proxy spawned for this test in front
/// of the local RabbitMQ, or RabbitMQ directly (`AMQPPROX_TEST_TARGET=direct`),
/// which validates the test logic independently of the proxy.
pub struct Target {
    proxy: Option<ProxyProcess>,
    host: String,
    port: u16,
}

impl Target {
    /// Checks that RabbitMQ answers, then starts a proxy in simple mode in
    /// front of it unless the direct target was asked for.
    pub fn start() -> Target {
        Target::start_with(|builder| builder)
    }

    /// Like [`Target::start`], letting the test add proxy arguments. The
    /// customisation is ignored in direct mode.
    pub fn start_with(customise: impl FnOnce(ProxyBuilder) -> ProxyBuilder) -> Target {
        rabbit::require_rabbitmq();
        if direct_mode() {
            return Target {
                proxy: None,
                host: rabbit::RABBITMQ_HOST.to_string(),
                port: rabbit::RABBITMQ_PORT,
            };
        }
        let proxy = customise(ProxyProcess::builder(
            rabbit::RABBITMQ_HOST,
            rabbit::RABBITMQ_PORT,
        ))
        .start();
        Target {
            host: "127.0.0.1".to_string(),
            port: proxy.port,
            proxy: Some(proxy),
        }
    }

    /// True when the clients go through a spawned proxy.
    pub fn via_proxy(&self) -> bool {
        self.proxy.is_some()
    }

    pub fn proxy(&self) -> Option<&ProxyProcess> {
        self.proxy.as_ref()
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `amqp://user:pass@host:port/<vhost>` with every part percent-encoded.
    pub fn amqp_url(&self, user: &str, pass: &str, vhost: &str) -> String {
        amqp_url(&self.host, self.port, user, pass, vhost)
    }

    /// A one-line description for assertion messages.
    pub fn describe(&self) -> String {
        match &self.proxy {
            Some(proxy) => format!(
                "proxy on 127.0.0.1:{} in front of RabbitMQ {}:{}",
                proxy.port,
                rabbit::RABBITMQ_HOST,
                rabbit::RABBITMQ_PORT
            ),
            None => format!(
                "RabbitMQ directly at {}:{} ({TARGET_ENV}=direct)",
                self.host, self.port
            ),
        }
    }
}

/// Whether `AMQPPROX_TEST_TARGET` asks for the direct target. Anything other
/// than unset, `proxy` or `direct` is a typo and fails the test.
pub fn direct_mode() -> bool {
    match std::env::var(TARGET_ENV) {
        Err(_) => false,
        Ok(value) => match value.as_str() {
            "" | "proxy" => false,
            "direct" => true,
            other => panic!("{TARGET_ENV}={other:?}: expected `proxy` or `direct`"),
        },
    }
}

/// Builds an AMQP URI, percent-encoding user, password and vhost (so the
/// default vhost `/` becomes `%2F`).
pub fn amqp_url(host: &str, port: u16, user: &str, pass: &str, vhost: &str) -> String {
    format!(
        "amqp://{}:{}@{}:{}/{}",
        percent_encode(user),
        percent_encode(pass),
        host,
        port,
        percent_encode(vhost)
    )
}

/// Percent-encodes everything outside RFC 3986's unreserved set.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A name no other test (in this process or a concurrent run) uses: process
/// id, the caller's label, a per-process counter and the clock.
pub fn unique_name(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "amqpprox-test-{}-{label}-{n}-{nanos:08x}",
        std::process::id()
    )
}

/// Runs a test body under [`TEST_TIMEOUT`]; a hang becomes a failure that
/// names the target. The target is borrowed so that it outlives the body and
/// can print the proxy's output when the panic unwinds through it.
pub async fn within<T>(target: &Target, body: impl Future<Output = T>) -> T {
    within_limit(TEST_TIMEOUT, target, body).await
}

pub async fn within_limit<T>(limit: Duration, target: &Target, body: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, body).await {
        Ok(value) => value,
        Err(_) => panic!(
            "test did not finish within {limit:?} against {}",
            target.describe()
        ),
    }
}

/// Runs a blocking helper (rabbitmqctl) off the async runtime's threads.
pub async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

/// Message sizes for the round-trip tests: `count` sizes, mostly small, some
/// around the 131072-byte frame size the proxy advertises, and the `big`
/// sizes (MiB-range) spread evenly through the sequence. The first is empty.
pub fn mixed_sizes(count: usize, big: &[usize]) -> Vec<usize> {
    let frame_edges = [
        131_072 - 8,
        131_072 - 9,
        131_072 - 7,
        131_072,
        2 * (131_072 - 8),
        2 * (131_072 - 8) + 1,
    ];
    let mut rng = XorShift::new(0x5eed_0000 + count as u64);
    let mut sizes: Vec<usize> = (0..count)
        .map(|i| match i {
            0 => 0,
            1 => 1,
            _ if i % 97 == 0 => frame_edges[(i / 97) % frame_edges.len()],
            _ if i % 10 == 0 => 4096 + (rng.next() % 60_000) as usize,
            _ => (rng.next() % 2048) as usize,
        })
        .collect();
    if !big.is_empty() && count > big.len() {
        let stride = count / (big.len() + 1);
        for (k, size) in big.iter().enumerate() {
            sizes[stride * (k + 1)] = *size;
        }
    }
    sizes
}

/// A body whose every byte depends on the message index and the offset, so a
/// reordering, truncation or corruption shows up as a mismatch.
pub fn body_for(index: usize, len: usize) -> Vec<u8> {
    let mut rng =
        XorShift::new(0x9e37_79b9_7f4a_7c15 ^ (index as u64).wrapping_mul(0x100_0000_01b3));
    let mut body = Vec::with_capacity(len);
    while body.len() < len {
        let word = rng.next().to_le_bytes();
        let take = (len - body.len()).min(word.len());
        body.extend_from_slice(&word[..take]);
    }
    body
}

/// Asserts two bodies are equal without printing megabytes on failure.
pub fn assert_body_eq(index: usize, got: &[u8], expected: &[u8]) {
    if got == expected {
        return;
    }
    let first_difference = got
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(expected.len()));
    panic!(
        "message {index}: body differs: got {} bytes, expected {} bytes, first difference at offset {first_difference}",
        got.len(),
        expected.len()
    );
}

/// A tiny deterministic generator; test data need not be random, only varied.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// A non-durable queue only this connection can use, deleted with it; its
/// unique name is returned.
pub async fn declare_private_queue(channel: &lapin::Channel, label: &str) -> String {
    let name = unique_name(label);
    let options = lapin::options::QueueDeclareOptions {
        exclusive: true,
        auto_delete: true,
        ..Default::default()
    };
    channel
        .queue_declare(&name, options, lapin::types::FieldTable::default())
        .await
        .unwrap_or_else(|err| panic!("declare queue {name}: {err:?}"));
    name
}
