//! `CONN [json]`: one line per session, gathered from every shard (see
//! `docs/commands.md#conn`). Idle times are seconds since each side last
//! sent anything. `inAvgLatencyMs`/`outAvgLatencyMs` (mean
//! pass-through write latency, really measured) appear once a write in
//! that direction completed (`docs/statistics.md`). `CONN json` adds
//! `backend_health` to each session: its backend's health now (`up`,
//! `down`, `unknown`), `null` before it has a backend.

use crate::control::{ControlState, Reply};
use crate::shard::SessionView;
use std::net::SocketAddr;

fn endpoint(addr: Option<SocketAddr>) -> String {
    let addr = addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let host = crate::hostnames::hostname_for(addr.ip()).unwrap_or_else(|| addr.ip().to_string());
    format!("{host}:{}", addr.port())
}

/// ` <name>=<ms>` once a write completed, else nothing.
fn latency(name: &str, ms: Option<f64>) -> String {
    ms.map(|ms| format!(" {name}={ms:.3}")).unwrap_or_default()
}

/// One `CONN` line, in the original's shape.
fn line(s: &SessionView) -> String {
    let yn = |b: bool| if b { 'Y' } else { 'N' };
    // AMQP lines keep the original's shape; only other protocols say theirs.
    let protocol = if s.protocol == "amqp" {
        String::new()
    } else {
        format!(" protocol={}", s.protocol)
    };
    format!(
        "id={} vhost={}{} disconnected={} paused={} authDenied={}{} ingressRemote={} ingressLocal={} egressLocal={} \
         egressRemote={} inBytes={} inFrames={} inPackets={}{} outBytes={} outFrames={} outPackets={}{} {:.3}:{:.3}\n",
        s.id,
        s.vhost,
        protocol,
        yn(s.disconnected),
        yn(s.paused),
        yn(s.auth_denied),
        if s.shaped { " shaped=Y" } else { "" },
        endpoint(Some(s.ingress_remote)),
        crate::hostnames::hostname_for(s.ingress_local.ip()).unwrap_or_else(|| s.ingress_local.ip().to_string()),
        endpoint(s.egress_local),
        endpoint(s.egress_remote),
        s.in_bytes,
        s.in_frames,
        s.in_packets,
        latency("inAvgLatencyMs", s.in_avg_latency_ms),
        s.out_bytes,
        s.out_frames,
        s.out_packets,
        latency("outAvgLatencyMs", s.out_avg_latency_ms),
        s.ingress_idle_secs,
        s.egress_idle_secs,
    )
}

/// One session in `CONN json`.
#[derive(serde::Serialize)]
struct ConnJson<'a> {
    #[serde(flatten)]
    view: &'a SessionView,
    backend_health: Option<&'static str>,
}

pub fn run(state: &ControlState, json: bool) -> Reply {
    let all = state.sessions();
    if json {
        let health = &state.shared.health;
        let docs: Vec<ConnJson> = all
            .iter()
            .map(|view| ConnJson {
                view,
                backend_health: (!view.backend.is_empty()).then(|| {
                    health
                        .entry(&view.backend)
                        .map_or(crate::health::HealthState::Unknown, |e| e.health.state())
                        .as_str()
                }),
            })
            .collect();
        return match serde_json::to_string(&docs) {
            Ok(json) => Reply::ok(json + "\n"),
            Err(e) => Reply::error(format!("Cannot encode sessions: {e}\n")),
        };
    }
    Reply::ok(all.iter().map(line).collect::<String>())
}
