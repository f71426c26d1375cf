//! The seed's performance scenario on real interfaces: bridges in a network namespace of
//! their own behind a veth pair, cut off mid-stream. Needs root and `ip` (iproute2).
#![cfg(unix)] // signals and process control via libc

mod support;

use std::process::Command;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use support::need::{self, Need};
use support::*;

/// A network namespace with a veth pair to this one; deleted (with the pair) when dropped.
struct NetNs {
    name: String,
    /// This side of the veth pair.
    veth: String,
}

/// Runs `ip ARGS`; Err with its stderr when it fails.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    /// `remote` (the namespace's address) and `local` (ours) on a /30 between them.
    fn create(local: &str, remote: &str) -> Result<NetNs, String> {
        let id = std::process::id() % 100_000;
        let ns = NetNs {
            name: format!("mpt-e2e-{id}"),
            veth: format!("mpt{id}a"),
        };
        let peer = format!("mpt{id}b");
        ip(&["netns", "add", &ns.name])?;
        ip(&[
            "link", "add", &ns.veth, "type", "veth", "peer", "name", &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &ns.name])?;
        ip(&["addr", "add", &format!("{local}/30"), "dev", &ns.veth])?;
        ip(&["link", "set", &ns.veth, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.name.as_str(), "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &format!("{remote}/30"), "dev", &peer])?;
        inside(&["link", "set", &peer, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn set_link(&self, up: bool) {
        ip(&["link", "set", &self.veth, if up { "up" } else { "down" }]).expect("ip link set");
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&["link", "del", &self.veth]);
    }
}

/// 19. The seed's performance scenario, on real interfaces: three bridges in a
///     "remote" network namespace reached over a veth pair, a fourth bridge local. Cutting
///     the veth link mid-stream takes the three remote paths away; the traffic carries on
///     over the local one without losing a datagram, the client reports the three paths down,
///     and they come back up when the link does. Needs root and `ip` (iproute2).
#[test]
#[ignore = "needs root and ip (network namespaces)"]
fn netns_remote_bridges_cut_mid_stream() {
    let _g = serial();
    need::require(Need::Netns);
    let (local_ip, remote_ip) = ("10.213.47.1", "10.213.47.2");
    let ns = NetNs::create(local_ip, remote_ip)
        .unwrap_or_else(|e| panic!("cannot create a network namespace here: {e}"));
    let (_echo, echo_addr) = start_echo(V4);
    let (server, server_addr) = start_server("0.0.0.0:0", echo_addr, &End::default());
    let upstream = |ip: &str| format!("{ip}:{}", server_addr.port());
    let mut remote = Vec::new();
    let mut paths = Vec::new();
    for i in 1..=3 {
        let listen = format!("{remote_ip}:0");
        let up = upstream(local_ip);
        let args = ["netns", "exec", &ns.name, BRIDGE, &listen, &up];
        let (p, addr) = start(&format!("remote-bridge{i}"), "ip", &args);
        remote.push(p);
        paths.push(addr);
    }
    let (_local, local_addr) = start_bridge(
        "local-bridge",
        V4,
        upstream("127.0.0.1").parse().unwrap(),
        &[],
    );
    paths.push(local_addr);
    let conf = client_conf(&paths);
    let fast = End::default().with(&["--probe-interval", "100", "--down-after", "600"]);
    let (mut client, client_addr) = start_client("127.0.0.1:0", &conf.0, &fast);
    let diag = || format!("{}\n{}", client.tail(20), server.tail(10));
    wait_roundtrip(client_addr, &diag);

    let remote: Vec<String> = paths[..3].iter().map(|a| a.to_string()).collect();
    // The state of each remote path in a report; every path has carried traffic.
    let states = |r: &Value| -> Vec<String> {
        remote
            .iter()
            .map(|addr| {
                let p = report_path(r, "remote", addr);
                p["state"].as_str().expect("state").to_string()
            })
            .collect()
    };
    let first = client.reports().len();
    let logged = client.lines().len();
    let run = Load::spawn(
        client_addr,
        &["--rate", "2000", "--size", "1000", "--duration", "5"],
    );
    thread::sleep(Duration::from_millis(1500));
    ns.set_link(false);
    let down = client.wait_report(first, |r| states(r).iter().all(|s| s == "down"));
    let cut = client.reports().len();
    thread::sleep(Duration::from_millis(1000));
    ns.set_link(true);
    let up = client.wait_report(cut, |r| states(r).iter().all(|s| s != "down"));
    let r = run.finish();
    println!("down: {:?}; back: {:?}", states(&down), states(&up));
    for p in up["paths"].as_array().expect("paths") {
        let once = if remote.iter().any(|a| p["remote"] == a.as_str()) {
            1.0
        } else {
            0.0
        };
        assert_eq!(num(p, "downs"), once, "{p}");
    }
    // Operators can grep the state changes by their documented keys (docs/STATS.md).
    let events: Vec<String> = client.lines().split_off(logged);
    for addr in &remote {
        for event in ["event=path_down", "event=path_up"] {
            let key = format!("remote={addr} ");
            assert!(
                events.iter().any(|l| l.contains(event) && l.contains(&key)),
                "no {event} for {addr}:\n{}",
                events.join("\n")
            );
        }
    }
    let ctx = || format!("{}\n{}", summary("cut", &r), client.tail(20));
    println!("{}", summary("cut", &r));
    assert_clean(&r, &ctx);
    assert_eq!(
        lost(&r),
        0.0,
        "datagrams lost while the local path stayed up\n{}",
        ctx()
    );
    assert!(num(&r, "sent") >= 9000.0, "{}", ctx());
}

/// A path named by a host name is looked up again when it goes down (on a helper thread):
/// mpclient runs in a mount namespace of its own whose /etc/hosts maps `bridge-host` to
/// 127.0.0.2, where a bridge listens. The name is moved to 127.0.0.3 (another bridge on the
/// same port) and the first bridge goes dark: the path goes down, is reconnected to the new
/// address and comes back up, while a second path carries the traffic. Needs root (a mount
/// namespace, like the network namespaces above).
#[test]
#[ignore = "needs root (a mount namespace for a private /etc/hosts)"]
fn netns_host_names_are_looked_up_again_when_a_path_goes_down() {
    let _g = serial();
    need::require(Need::Netns);
    let (_echo, echo_addr) = start_echo(V4);
    let (server, server_addr) = start_server("127.0.0.1:0", echo_addr, &End::default());
    let up = server_addr.to_string();
    let (old, old_addr) = start("bridge-old", BRIDGE, &["127.0.0.2:0", &up]);
    let port = old_addr.port();
    let (_new, new_addr) = start("bridge-new", BRIDGE, &[&format!("127.0.0.3:{port}"), &up]);
    let (_direct, direct_addr) = start_bridge("bridge-direct", V4, server_addr, &[]);
    let hosts = TempFile::new("hosts", "127.0.0.1 localhost\n127.0.0.2 bridge-host\n");
    let conf = TempFile::new(
        "client.conf",
        &format!(
            "bridge-host {port} name=named\n{} {}\n",
            direct_addr.ip(),
            direct_addr.port()
        ),
    );
    let (mut client, client_addr) = start(
        "mpclient",
        "unshare",
        &[
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind \"$0\" /etc/hosts && exec \"$@\"",
            hosts.path(),
            CLIENT,
            "--listen",
            "127.0.0.1:0",
            "--stats-json",
            "--stats-interval",
            "0.5",
            "--probe-interval",
            "100",
            "--down-after",
            "600",
            conf.path(),
        ],
    );
    wait_roundtrip(client_addr, &|| {
        format!("{}\n{}", client.tail(20), server.tail(10))
    });
    let named = |r: &Value| -> (String, String) {
        let p = report_path(r, "name", "named");
        (
            p["remote"].as_str().expect("remote").to_string(),
            p["state"].as_str().expect("state").to_string(),
        )
    };
    let first = client.next_report();
    assert_eq!(named(&first), (old_addr.to_string(), "up".to_string()));
    let run = Load::spawn(
        client_addr,
        &["--rate", "500", "--size", "200", "--duration", "5"],
    );
    thread::sleep(Duration::from_millis(1000));
    // The name moves, then its old address goes dark.
    std::fs::write(hosts.path(), "127.0.0.1 localhost\n127.0.0.3 bridge-host\n")
        .expect("rewrite the hosts file");
    let seen = client.reports().len();
    old.signal(libc::SIGUSR1);
    let moved = client.wait_report(seen, |r| {
        named(r) == (new_addr.to_string(), "up".to_string())
    });
    let r = run.finish();
    let resolved = client.wait_for_line("event=path_resolved", 0);
    assert!(
        resolved.contains(&format!("remote={new_addr}")),
        "{resolved}"
    );
    let ctx = || {
        format!(
            "{}\n{moved}\n{}\n{}",
            summary("re-resolved", &r),
            client.tail(20),
            server.tail(10)
        )
    };
    assert_clean(&r, &ctx);
    assert_eq!(lost(&r), 0.0, "the direct path was up all along\n{}", ctx());
    println!("{resolved}");
}
