//! The metrics endpoint (`--metrics ADDR`): a small HTTP server on a thread of its own, so
//! that no request can slow the tunnel's loop. It answers GET only:
//!
//! - `/metrics`: the stats snapshot in the Prometheus/OpenMetrics text format (encoded by
//!   the `prometheus-client` crate);
//! - `/stats`: the same snapshot as JSON (what `mpt_tunnel_stats_json` and Python's
//!   `stats()` return);
//! - `/`: the live page, one HTML file compiled into the binary that polls `/stats`.
//!
//! `tiny_http` was chosen over `httparse` inside the mio loop: a scrape or a slow client
//! then costs the tunnel nothing, the snapshot comes through [`TunnelHandle::stats`] like
//! any other caller's, and the crate is small and keeps to the standard library. Anything
//! but GET (or HEAD) is 405, an unknown path 404, a request with a body or a URL over
//! 2 KiB 400 or 414; nothing a client sends can stop the thread.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tiny_http::{Header, Method, Request, Response, Server};

use super::{Error, TunnelHandle};
use crate::protocol::stats::Stats;

/// The live page.
const PAGE: &str = include_str!("web/page.html");
/// Longest URL answered.
const MAX_URL: usize = 2048;

/// A bound metrics endpoint, not serving yet.
pub(crate) struct Metrics {
    server: Arc<Server>,
    addr: SocketAddr,
}

impl Metrics {
    /// Binds `addr` (`HOST:PORT`).
    pub(crate) fn bind(addr: &str) -> Result<Metrics, Error> {
        let a = super::resolve::resolve(addr)?;
        let server = Server::http(a).map_err(|e| {
            Error::Io(
                format!("cannot serve metrics on {a}"),
                std::io::Error::other(e.to_string()),
            )
        })?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| Error::Io("metrics".into(), std::io::Error::other("no address")))?;
        Ok(Metrics {
            server: Arc::new(server),
            addr,
        })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves on a thread of its own until the tunnel stops.
    pub(crate) fn spawn(self, tunnel: TunnelHandle) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("mptunnel-metrics".into())
            .spawn(move || {
                log::info!("metrics on http://{}/ (/metrics, /stats)", self.addr);
                while tunnel.is_running() {
                    match self.server.recv_timeout(Duration::from_millis(100)) {
                        Ok(Some(req)) => answer(req, &tunnel),
                        Ok(None) => {}
                        Err(e) => {
                            log::debug!("metrics: {e}");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
    }
}

fn header(k: &str, v: &str) -> Header {
    Header::from_bytes(k.as_bytes(), v.as_bytes()).expect("static header")
}

fn text(status: u16, body: &str) -> Response<std::io::Cursor<Vec<u8>>> {
    Response::from_string(body)
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

fn answer(req: Request, tunnel: &TunnelHandle) {
    let head = *req.method() == Method::Head;
    let resp = if !matches!(req.method(), Method::Get | Method::Head) {
        text(405, "only GET\n").with_header(header("Allow", "GET, HEAD"))
    } else if req.url().len() > MAX_URL {
        text(414, "URL too long\n")
    } else if req.body_length().is_some_and(|n| n > 0) {
        text(400, "a GET has no body\n")
    } else {
        let path = req.url().split('?').next().unwrap_or("");
        match path {
            "/" | "/index.html" => Response::from_string(PAGE)
                .with_header(header("Content-Type", "text/html; charset=utf-8")),
            "/stats" => Response::from_string(tunnel.stats().to_json())
                .with_header(header("Content-Type", "application/json")),
            "/metrics" => Response::from_string(exposition(&tunnel.stats())).with_header(header(
                "Content-Type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )),
            _ => text(404, "not found: try /, /stats or /metrics\n"),
        }
    };
    let resp = resp.with_header(header("Cache-Control", "no-store"));
    let result = if head {
        let len = resp.data_length();
        let mut r = resp.with_data(std::io::empty(), Some(0));
        if let Some(n) = len {
            r.add_header(header("X-Content-Length", &n.to_string()));
        }
        req.respond(r)
    } else {
        req.respond(resp)
    };
    if let Err(e) = result {
        log::debug!("metrics: cannot answer: {e}");
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    path: String,
    remote: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathDir {
    path: String,
    remote: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathState {
    path: String,
    remote: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Info {
    role: String,
    epoch: String,
    mode: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientPath {
    client: String,
    index: String,
    remote: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabel {
    client: String,
    mode: String,
}

type GaugeF = Gauge<f64, AtomicU64>;

/// Counters of `totals` that count drops, by reason (`mptunnel_dropped_total{reason}`).
const DROPS: &[&str] = &[
    "duplicates",
    "too_old",
    "stale_epoch",
    "malformed",
    "checksum_errors",
    "unknown_session",
    "oversized",
    "session_cap_drops",
    "amplification_drops",
    "send_errors",
    "auth_failures",
    "reflected",
    "old_version",
    "unsupported",
    "held_dropped",
    "app_queue_drops",
];

/// The snapshot in the OpenMetrics text format.
pub(crate) fn exposition(s: &Stats) -> String {
    let mut r = Registry::with_prefix("mptunnel");
    let info = Family::<Info, Gauge>::default();
    r.register(
        "info",
        "The endpoint: role, epoch, scheduling mode, version",
        info.clone(),
    );
    info.get_or_create(&Info {
        role: s.role.clone(),
        epoch: s.epoch.clone(),
        mode: s.mode.clone(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
    .set(1);
    let gauge = |r: &mut Registry, name: &str, help: &str, v: f64| {
        let g = GaugeF::default();
        g.set(v);
        r.register(name, help, g);
    };
    gauge(
        &mut r,
        "uptime_seconds",
        "Seconds since the endpoint started",
        s.uptime_s,
    );
    let int = |r: &mut Registry, name: &str, help: &str, v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        r.register(name, help, g);
    };
    int(&mut r, "sessions", "Sessions held now", s.sessions as i64);
    int(
        &mut r,
        "encrypted",
        "1 when packets are sealed with a key",
        i64::from(s.encrypted),
    );
    // Every counter of `totals`: drops as one family by reason, the others one each.
    let dropped = Family::<Reason, Counter>::default();
    r.register(
        "dropped",
        "Packets and datagrams dropped, by reason",
        dropped.clone(),
    );
    if let Ok(serde_json::Value::Object(totals)) = serde_json::to_value(&s.totals) {
        for (k, v) in totals {
            let n = v.as_u64().unwrap_or(0);
            if DROPS.contains(&k.as_str()) {
                dropped.get_or_create(&Reason { reason: k }).inc_by(n);
            } else {
                let c = Counter::<u64>::default();
                c.inc_by(n);
                r.register(k.clone(), counter_help(&k), c);
            }
        }
    }
    let state = Family::<PathState, Gauge>::default();
    let rtt = Family::<PathLabels, GaugeF>::default();
    let jitter = Family::<PathLabels, GaugeF>::default();
    let loss = Family::<PathDir, GaugeF>::default();
    let packets = Family::<PathDir, Counter>::default();
    let bytes = Family::<PathDir, Counter>::default();
    let active = Family::<PathLabels, Gauge>::default();
    for p in &s.paths {
        let l = PathLabels {
            path: p.name.clone(),
            remote: p.remote.clone(),
        };
        for st in ["up", "lossy", "down"] {
            state
                .get_or_create(&PathState {
                    path: l.path.clone(),
                    remote: l.remote.clone(),
                    state: st.into(),
                })
                .set(i64::from(p.state == st));
        }
        if let Some(v) = p.rtt_ms {
            rtt.get_or_create(&l).set(v / 1000.0);
        }
        if let Some(v) = p.jitter_ms {
            jitter.get_or_create(&l).set(v / 1000.0);
        }
        let dir = |d: &str| PathDir {
            path: l.path.clone(),
            remote: l.remote.clone(),
            direction: d.into(),
        };
        for (d, v) in [("out", p.loss_out), ("in", p.loss_in)] {
            if let Some(v) = v {
                loss.get_or_create(&dir(d)).set(v);
            }
        }
        packets.get_or_create(&dir("tx")).inc_by(p.tx_packets);
        packets.get_or_create(&dir("rx")).inc_by(p.rx_packets);
        bytes.get_or_create(&dir("tx")).inc_by(p.tx_bytes);
        bytes.get_or_create(&dir("rx")).inc_by(p.rx_bytes);
        active.get_or_create(&l).set(i64::from(p.active));
    }
    r.register(
        "path_state",
        "1 for the path's current state (up, lossy, down)",
        state,
    );
    r.register(
        "path_rtt_seconds",
        "Smoothed round-trip time of the path",
        rtt,
    );
    r.register(
        "path_jitter_seconds",
        "Round-trip time variation of the path",
        jitter,
    );
    r.register(
        "path_loss_ratio",
        "Loss of the path in each direction (out: to the peer)",
        loss,
    );
    r.register(
        "path_packets",
        "Packets on the path (tx sent, rx accepted)",
        packets,
    );
    r.register(
        "path_bytes",
        "Bytes on the path (tx sent, rx accepted)",
        bytes,
    );
    r.register(
        "path_active",
        "1 while the scheduler puts data on the path",
        active,
    );
    if s.role == "server" {
        let clients = Family::<ClientLabel, Gauge>::default();
        let c_rtt = Family::<ClientPath, GaugeF>::default();
        let c_loss = Family::<ClientPathDir, GaugeF>::default();
        for c in &s.clients {
            clients
                .get_or_create(&ClientLabel {
                    client: c.epoch.clone(),
                    mode: c.mode.clone(),
                })
                .set(c.sessions as i64);
            for p in &c.paths {
                let l = ClientPath {
                    client: c.epoch.clone(),
                    index: p.index.to_string(),
                    remote: p.remote.clone(),
                };
                if let Some(v) = p.rtt_ms {
                    c_rtt.get_or_create(&l).set(v / 1000.0);
                }
                for (d, v) in [("out", p.loss_out), ("in", p.loss_in)] {
                    if let Some(v) = v {
                        c_loss
                            .get_or_create(&ClientPathDir {
                                client: l.client.clone(),
                                index: l.index.clone(),
                                remote: l.remote.clone(),
                                direction: d.into(),
                            })
                            .set(v);
                    }
                }
            }
        }
        r.register(
            "client_sessions",
            "Sessions of each client epoch (label: its mode)",
            clients,
        );
        r.register(
            "client_path_rtt_seconds",
            "RTT of each client path, as the client measured it",
            c_rtt,
        );
        r.register(
            "client_path_loss_ratio",
            "Loss of each client path, as the client measured it (out: client to server)",
            c_loss,
        );
    }
    let mut out = String::new();
    if encode(&mut out, &r).is_err() {
        out = "# EOF\n".into();
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientPathDir {
    client: String,
    index: String,
    remote: String,
    direction: String,
}

/// HELP text for a counter of `totals` (docs/STATS.md has the full meanings).
fn counter_help(name: &str) -> String {
    format!(
        "The {} counter of the stats snapshot (see docs/STATS.md)",
        name.replace('_', " ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::path::PathStats;

    #[test]
    fn exposition_has_the_series() {
        let s = Stats {
            role: "client".into(),
            epoch: "00ab".into(),
            mode: "failover".into(),
            paths: vec![PathStats {
                name: "lte \"1\"".into(),
                remote: "10.0.0.1:4001".into(),
                state: "lossy".into(),
                rtt_ms: Some(20.0),
                loss_out: Some(0.25),
                tx_packets: 7,
                ..PathStats::default()
            }],
            ..Stats::default()
        };
        let text = exposition(&s);
        for want in [
            "mptunnel_info{role=\"client\",epoch=\"00ab\",mode=\"failover\"",
            "mptunnel_path_state{path=\"lte \\\"1\\\"\",remote=\"10.0.0.1:4001\",state=\"lossy\"} 1",
            "mptunnel_path_rtt_seconds{path=\"lte \\\"1\\\"\",remote=\"10.0.0.1:4001\"} 0.02",
            "mptunnel_path_loss_ratio{path=\"lte \\\"1\\\"\",remote=\"10.0.0.1:4001\",direction=\"out\"} 0.25",
            "mptunnel_path_packets_total{path=\"lte \\\"1\\\"\",remote=\"10.0.0.1:4001\",direction=\"tx\"} 7",
            "mptunnel_dropped_total{reason=\"duplicates\"} 0",
            "mptunnel_local_tx_datagrams_total 0",
            "# EOF",
        ] {
            assert!(text.contains(want), "{want}\nin\n{text}");
        }
    }
}
