//! Backends' health as Prometheus series (see `docs/statistics.md` and
//! `docs/reliability.md#health-checks`), appended to `/metrics`: per
//! backend its state as a 0/1 gauge per state, its consecutive failures,
//! and the age of its last error. Pure rendering of a registry snapshot;
//! it never probes, and the error text stays out of labels (unbounded
//! values): `BACKEND PRINT` shows it.

use std::fmt::Write;

use super::registry::HealthRegistry;
use super::state::HealthState;

/// Escapes a label value as the exposition format wants.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The health series of every registered backend, with their HELP and TYPE
/// lines; nothing when no backend is registered.
pub fn render_prometheus(registry: &HealthRegistry) -> String {
    let snapshot = registry.snapshot();
    let mut out = String::new();
    if snapshot.is_empty() {
        return out;
    }
    let now = registry.now();
    out.push_str(
        "# HELP amqpprox_backend_health Whether the backend is in this health state (1) or not (0).\n\
         # TYPE amqpprox_backend_health gauge\n",
    );
    for (name, s) in &snapshot {
        for state in [HealthState::Up, HealthState::Down, HealthState::Unknown] {
            let _ = writeln!(
                out,
                "amqpprox_backend_health{{backend=\"{}\",state=\"{}\"}} {}",
                label(name),
                state.as_str(),
                u8::from(s.counters.state == state)
            );
        }
    }
    out.push_str(
        "# HELP amqpprox_backend_consecutive_failures Failures seen in a row by the probe or sessions.\n\
         # TYPE amqpprox_backend_consecutive_failures gauge\n",
    );
    for (name, s) in &snapshot {
        let _ = writeln!(
            out,
            "amqpprox_backend_consecutive_failures{{backend=\"{}\"}} {}",
            label(name),
            s.counters.consecutive_failures
        );
    }
    out.push_str(
        "# HELP amqpprox_backend_last_error_age_seconds Seconds since the backend's last failure (absent when none).\n\
         # TYPE amqpprox_backend_last_error_age_seconds gauge\n",
    );
    for (name, s) in &snapshot {
        if let Some(e) = &s.last_error {
            let _ = writeln!(
                out,
                "amqpprox_backend_last_error_age_seconds{{backend=\"{}\"}} {:.3}",
                label(name),
                now.saturating_sub(e.at).as_secs_f64()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ProxyHeader;
    use crate::health::{HealthPolicy, ProbeTarget};

    #[test]
    fn each_backend_has_one_state_set_and_its_failures() {
        let r = HealthRegistry::new(HealthPolicy {
            passive_fall: 1,
            ..HealthPolicy::default()
        });
        assert_eq!(render_prometheus(&r), "");
        r.sync(["a\"1", "b"].map(|n| ProbeTarget {
            name: n.into(),
            host: "127.0.0.1".into(),
            address: Some([127, 0, 0, 1].into()),
            port: 5672,
            proxy_header: ProxyHeader::None,
            tls: false,
        }));
        r.session_failed("b", &"refused");
        let text = render_prometheus(&r);
        for line in [
            "amqpprox_backend_health{backend=\"a\\\"1\",state=\"unknown\"} 1",
            "amqpprox_backend_health{backend=\"a\\\"1\",state=\"up\"} 0",
            "amqpprox_backend_health{backend=\"b\",state=\"down\"} 1",
            "amqpprox_backend_consecutive_failures{backend=\"b\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.contains("amqpprox_backend_last_error_age_seconds{backend=\"b\"} "));
        assert!(!text.contains("last_error_age_seconds{backend=\"a"));
    }
}
