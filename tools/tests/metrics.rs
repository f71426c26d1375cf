//! The metrics endpoint of mpclient and mpserver (`--metrics`): /metrics, /stats and the live
//! page over real HTTP, and requests it must refuse without falling over.
#![cfg(unix)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use support::*;

/// One raw request; returns (status, headers and body as text).
fn http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request).expect("send the request");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

fn body(resp: &str) -> &str {
    resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn metrics_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn metrics_stats_and_the_page_over_http() {
    let _g = serial();
    let (cm, sm) = (metrics_port(), metrics_port());
    let t = Topo::with(
        V4,
        Setup {
            bridges: &[&["--loss", "20", "--seed", "5"], &[]],
            client: End::default().with(&["--metrics", &cm.port().to_string()]),
            server: End::default().with(&["--metrics", &sm.to_string()]),
            ..Setup::default()
        },
    );
    let r = load(
        t.client_addr,
        &["--rate", "500", "--size", "100", "--duration", "2"],
    );
    assert_clean(&r, &|| t.diag());

    let (code, m) = get(cm, "/metrics");
    assert_eq!(code, 200, "{m}");
    assert!(m.contains("application/openmetrics-text"), "{m}");
    let m = body(&m);
    for want in [
        "mptunnel_info{role=\"client\"",
        "mptunnel_path_state{",
        "mptunnel_path_rtt_seconds{",
        "mptunnel_path_loss_ratio{",
        "direction=\"out\"",
        "mptunnel_dropped_total{reason=\"duplicates\"}",
        "\nmptunnel_sessions ",
        "# EOF",
    ] {
        assert!(m.contains(want), "{want} missing in\n{m}");
    }
    let (code, s) = get(cm, "/stats");
    assert_eq!(code, 200);
    let stats: serde_json::Value = serde_json::from_str(body(&s)).expect("JSON stats");
    assert_eq!(stats["role"], "client");
    assert_eq!(stats["paths"].as_array().map(Vec::len), Some(2));
    let (code, page) = get(cm, "/");
    assert_eq!(code, 200);
    assert!(
        page.contains("text/html") && page.contains("fetch(\"stats\""),
        "{page}"
    );

    let (code, s) = get(sm, "/stats");
    assert_eq!(code, 200);
    let stats: serde_json::Value = serde_json::from_str(body(&s)).expect("JSON stats");
    assert_eq!(stats["role"], "server");
    assert_eq!(
        stats["clients"].as_array().map(Vec::len),
        Some(1),
        "{stats}"
    );
    let (_, m) = get(sm, "/metrics");
    assert!(body(&m).contains("mptunnel_client_sessions{"), "{m}");

    // Refused, and the endpoint goes on.
    assert_eq!(
        http(
            cm,
            b"POST /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        )
        .0,
        405
    );
    assert_eq!(get(cm, "/nope").0, 404);
    assert_eq!(get(cm, &format!("/{}", "a".repeat(5000))).0, 414);
    let _ = http(cm, b"\x00\x01garbage\r\n\r\n");
    let _ = http(cm, &vec![b'A'; 100_000]);
    let (code, _) = get(cm, "/stats");
    assert_eq!(code, 200, "the endpoint stopped answering");
    assert!(
        t.diag().contains("metrics on http://127.0.0.1:"),
        "{}",
        t.diag()
    );
}
