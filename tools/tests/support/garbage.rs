//! Garbage for the ports a tunnel exposes: random bytes, near-packets, truncated and
//! bit-flipped copies of well-formed ones.

/// xorshift64*: reproducible from the printed seed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A packet laid out as in docs/PROTOCOL.md, with a right or wrong CRC.
#[allow(clippy::too_many_arguments)]
pub fn packet(
    ty: u8,
    flags: u8,
    path: u8,
    session: u64,
    epoch: u64,
    seq: u64,
    payload: &[u8],
    good_crc: bool,
) -> Vec<u8> {
    let mut p = vec![0xD2, ty, flags, path];
    p.extend(session.to_be_bytes());
    p.extend(epoch.to_be_bytes());
    p.extend(seq.to_be_bytes());
    p.extend(payload);
    let crc = crc32(&p) ^ u32::from(!good_crc);
    p.extend(crc.to_be_bytes());
    p
}

/// Random bytes, version-1 and version-2 prefixed noise, every type/flag/path-index
/// combination with right and wrong CRCs, well-formed packets of unknown sessions (from
/// either role), and truncated and bit-flipped copies.
pub fn garbage(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for _ in 0..300 {
        let n = rng.below(2000) as usize;
        out.push(rng.bytes(n));
    }
    for _ in 0..100 {
        let n = 1 + rng.below(200) as usize;
        let mut d = rng.bytes(n);
        d[0] = if n % 2 == 0 { 0xD1 } else { 0xD2 };
        out.push(d);
    }
    let mut valid = Vec::new();
    for ty in 0..=12u8 {
        for flags in [0u8, 1, 2, 3, 0x80] {
            for path in [0u8, 7, 64] {
                for good in [true, false] {
                    let session = if rng.below(4) == 0 { 0 } else { rng.next() };
                    let n = rng.below(64) as usize;
                    let payload = rng.bytes(n);
                    let p = packet(
                        ty,
                        flags,
                        path,
                        session,
                        rng.next(),
                        rng.next(),
                        &payload,
                        good,
                    );
                    if good && flags & !2 == 0 && path < 64 {
                        valid.push(p.clone());
                    }
                    out.push(p);
                }
            }
        }
    }
    // Well-formed packets that belong to nobody: new sessions, closes, probes and acks.
    for _ in 0..10 {
        let n = rng.below(1500) as usize;
        let data = rng.bytes(n);
        valid.push(packet(
            1,
            0,
            0,
            rng.next(),
            rng.next(),
            1 + rng.below(100),
            &data,
            true,
        ));
        valid.push(packet(
            4,
            0,
            0,
            rng.next(),
            rng.next(),
            rng.next(),
            &[],
            true,
        ));
        let token = rng.bytes(8);
        valid.push(packet(2, 0, 0, 0, rng.next(), rng.next(), &token, true));
        let ack = rng.bytes(32);
        valid.push(packet(3, 0, 0, 0, rng.next(), rng.next(), &ack, true));
    }
    for p in &valid {
        for _ in 0..3 {
            let cut = rng.below(p.len() as u64) as usize;
            out.push(p[..cut].to_vec());
            let mut flipped = p.clone();
            let bit = rng.below(p.len() as u64 * 8) as usize;
            flipped[bit / 8] ^= 1 << (bit % 8);
            out.push(flipped);
        }
    }
    out.extend(valid);
    let mut big = rng.bytes(65_507);
    big[..4].copy_from_slice(&[0xD2, 1, 0, 0]);
    out.push(big);
    out
}
