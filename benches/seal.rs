//! Cost of sealing and opening one 1,200-byte packet, against the unsealed codec.
//! `cargo bench --bench seal` (plain `harness = false` binary: prints ns per packet).

use std::hint::black_box;
use std::time::Instant;

use mptunnel::protocol::crypto::{Codec, Key};
use mptunnel::protocol::packet::{Header, PacketType};

fn per_packet(codec: &Codec, n: u64) -> (f64, f64) {
    let payload = vec![7u8; 1200];
    let mut out = Vec::with_capacity(2048);
    let mut scratch = Vec::with_capacity(2048);
    let t = Instant::now();
    for seq in 0..n {
        let h = Header {
            ptype: PacketType::Data,
            flags: 0,
            session: 1,
            epoch: 2,
            seq,
        };
        codec.encode(&mut out, &h, black_box(&payload));
    }
    let enc = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    for _ in 0..n {
        let p = codec.open(black_box(&out), &mut scratch).map(|p| p.len());
        black_box(p.ok());
    }
    let dec = t.elapsed().as_nanos() as f64 / n as f64;
    (enc, dec)
}

fn main() {
    let n = 200_000;
    let (pe, pd) = per_packet(&Codec::new(None), n);
    let (se, sd) = per_packet(&Codec::new(Some(&Key::from_bytes([9; 32]))), n);
    println!("1200-byte packets, ns each: unsealed encode {pe:.0} open {pd:.0}; sealed encode {se:.0} open {sd:.0}");
    println!(
        "sealed throughput: {:.0} MB/s encode, {:.0} MB/s open",
        1200.0e3 / se,
        1200.0e3 / sd
    );
}
