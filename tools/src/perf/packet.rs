//! mpperf datagram layout: magic, run id, seq, send time, then a padding pattern derived from seq.
//! All integers are big-endian.

use crate::seed::splitmix64;

pub const MAGIC: [u8; 4] = *b"MPPF";
pub const HEADER_LEN: usize = 28;
pub const MIN_SIZE: usize = 32;
/// Largest payload an IPv4 UDP datagram can carry.
pub const MAX_SIZE: usize = 65_507;

/// Header fields of a received datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub run_id: u64,
    pub seq: u64,
    pub sent_ns: u64,
}

/// Fills `buf` (its length is the datagram size) for one datagram.
pub fn fill(buf: &mut [u8], run_id: u64, seq: u64, sent_ns: u64) {
    buf[..4].copy_from_slice(&MAGIC);
    buf[4..12].copy_from_slice(&run_id.to_be_bytes());
    buf[12..20].copy_from_slice(&seq.to_be_bytes());
    buf[20..28].copy_from_slice(&sent_ns.to_be_bytes());
    let mut state = pattern_seed(seq);
    for chunk in buf[HEADER_LEN..].chunks_mut(8) {
        let word = splitmix64(&mut state).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
}

/// Reads the header; None if the datagram is too short or the magic is wrong.
pub fn parse_header(buf: &[u8]) -> Option<Header> {
    if buf.len() < HEADER_LEN || buf[..4] != MAGIC {
        return None;
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&buf[at..at + 8]);
        u64::from_be_bytes(b)
    };
    Some(Header {
        run_id: word(4),
        seq: word(12),
        sent_ns: word(20),
    })
}

/// True if the padding after the header is exactly what [`fill`] writes for `seq`.
pub fn padding_ok(buf: &[u8], seq: u64) -> bool {
    if buf.len() < HEADER_LEN {
        return false;
    }
    let mut state = pattern_seed(seq);
    buf[HEADER_LEN..].chunks(8).all(|chunk| {
        let word = splitmix64(&mut state).to_le_bytes();
        chunk == &word[..chunk.len()]
    })
}

fn pattern_seed(seq: u64) -> u64 {
    seq.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ 0x4D50_5046_7061_6421
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        for size in [MIN_SIZE, 33, 1200, 1203] {
            let mut buf = vec![0u8; size];
            fill(&mut buf, 42, 7, 1234);
            assert_eq!(
                parse_header(&buf),
                Some(Header {
                    run_id: 42,
                    seq: 7,
                    sent_ns: 1234
                })
            );
            assert!(padding_ok(&buf, 7));
            assert!(!padding_ok(&buf, 8));
            let last = buf.len() - 1;
            buf[last] ^= 1;
            assert!(!padding_ok(&buf, 7));
        }
        assert_eq!(parse_header(b"MPPF"), None);
        assert_eq!(parse_header(&[0u8; 40]), None);
    }

    #[test]
    fn patterns_differ_between_seqs() {
        let mut a = vec![0u8; 64];
        let mut b = vec![0u8; 64];
        fill(&mut a, 1, 1, 0);
        fill(&mut b, 1, 2, 0);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }
}
