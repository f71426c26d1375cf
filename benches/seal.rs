//! Cost of one 1,200-byte datagram sent on three paths (sealed once, three copies with their
//! path index) and of receiving one copy (path MAC, then open), sealed against unsealed.
//! `cargo bench --bench seal` (plain `harness = false` binary: prints ns per datagram/copy).

use std::hint::black_box;
use std::time::Instant;

use mptunnel::protocol::crypto::{Codec, Key};
use mptunnel::protocol::packet::{Header, PacketType, Sender};

fn per_datagram(key: Option<&Key>, n: u64) -> (f64, f64) {
    let client = Codec::new(key, Sender::Client);
    let server = Codec::new(key, Sender::Server);
    let payload = vec![7u8; 1200];
    let mut template = Vec::with_capacity(2048);
    let mut out = Vec::with_capacity(2048);
    let mut scratch = Vec::with_capacity(2048);
    let t = Instant::now();
    for seq in 0..n {
        let h = Header {
            ptype: PacketType::Data,
            flags: 0,
            path: 0,
            session: 1,
            epoch: 2,
            seq,
        };
        client.prepare(&mut template, &h, black_box(&payload));
        for path in 0..3 {
            client.finish_copy(&template, path, &mut out);
            black_box(&out);
        }
    }
    let send = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    for _ in 0..n {
        let ok = server.verify_path(black_box(&out)).is_ok();
        let p = server.open(black_box(&out), &mut scratch).map(|p| p.len());
        black_box((ok, p.ok()));
    }
    let receive = t.elapsed().as_nanos() as f64 / n as f64;
    (send, receive)
}

fn main() {
    let n = 200_000;
    let (ps, pr) = per_datagram(None, n);
    let (ss, sr) = per_datagram(Some(&Key::from_bytes([9; 32])), n);
    println!(
        "1200-byte datagrams, ns: unsealed send (3 copies) {ps:.0}, receive a copy {pr:.0}; \
         sealed send (3 copies) {ss:.0}, receive a copy {sr:.0}"
    );
}
