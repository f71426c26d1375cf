//! The v1 packet codec. The byte layout is documented once, in docs/PROTOCOL.md.

use std::fmt;

/// First byte of every packet: high nibble is the magic `0xD`, low nibble the version (1).
pub const MAGIC_VERSION: u8 = 0xD1;
/// Fixed header length in bytes.
pub const HEADER_LEN: usize = 28;
/// Trailer of an unsealed packet: CRC-32 over header and payload.
pub const CHECKSUM_LEN: usize = 4;
/// Trailer of a sealed packet: the AEAD tag (reserved for the encrypted mode).
pub const TAG_LEN: usize = 16;
/// Per-packet overhead of an unsealed packet.
pub const OVERHEAD: usize = HEADER_LEN + CHECKSUM_LEN;
/// Largest UDP payload over IPv4 (65,535 - 20 IP - 8 UDP).
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// Largest application datagram the tunnel carries (it is never split).
pub const MAX_DATAGRAM: usize = MAX_UDP_PAYLOAD - OVERHEAD;

/// Flag bit: the trailer is an AEAD tag, not a checksum.
pub const FLAG_SEALED: u8 = 0x01;
const KNOWN_FLAGS: u8 = FLAG_SEALED;

/// Session id 0 is reserved for path-level control packets (PROBE, PROBE_ACK).
pub const CONTROL_SESSION: u64 = 0;

/// Packet types. Numbers are fixed forever; unknown numbers are rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// An application datagram.
    Data = 1,
    /// Path probe: carries a token the peer echoes.
    Probe = 2,
    /// Answer to a probe: echoes it and reports what the acker received on the path.
    ProbeAck = 3,
    /// The sender drops its state for this session; the receiver should too.
    Close = 4,
    /// Reserved: freshness challenge for the keyed mode.
    Challenge = 5,
    /// Reserved: answer to a challenge.
    Response = 6,
    /// Reserved: a client asks for a target (many-targets mode).
    TargetRequest = 7,
    /// Reserved: the server refuses a target request.
    TargetDeny = 8,
}

impl PacketType {
    /// Maps a wire byte to a type.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Data,
            2 => Self::Probe,
            3 => Self::ProbeAck,
            4 => Self::Close,
            5 => Self::Challenge,
            6 => Self::Response,
            7 => Self::TargetRequest,
            8 => Self::TargetDeny,
            _ => return None,
        })
    }
}

/// The fixed header of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the packet is.
    pub ptype: PacketType,
    /// Flag bits ([`FLAG_SEALED`]).
    pub flags: u8,
    /// The flow this packet belongs to; [`CONTROL_SESSION`] for path control.
    pub session: u64,
    /// The sender's epoch (random per endpoint start).
    pub epoch: u64,
    /// Sequence number, per session and direction (or per endpoint for control).
    pub seq: u64,
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = MAGIC_VERSION;
        out[1] = self.ptype as u8;
        out[2] = self.flags;
        out[3] = 0;
        out[4..12].copy_from_slice(&self.session.to_be_bytes());
        out[12..20].copy_from_slice(&self.epoch.to_be_bytes());
        out[20..28].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// Parses a header; checks magic, version, type and flags but not the trailer.
    pub fn parse(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        if bytes[0] != MAGIC_VERSION {
            return Err(if bytes[0] >> 4 == MAGIC_VERSION >> 4 {
                DecodeError::UnsupportedVersion(bytes[0] & 0x0f)
            } else {
                DecodeError::BadMagic
            });
        }
        let ptype = PacketType::from_u8(bytes[1]).ok_or(DecodeError::UnknownType(bytes[1]))?;
        let flags = bytes[2];
        if flags & !KNOWN_FLAGS != 0 || bytes[3] != 0 {
            return Err(DecodeError::BadFlags);
        }
        Ok(Header {
            ptype,
            flags,
            session: be_u64(&bytes[4..12]),
            epoch: be_u64(&bytes[12..20]),
            seq: be_u64(&bytes[20..28]),
        })
    }
}

/// Why a datagram from the network is not a valid packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than header plus trailer.
    Truncated,
    /// Not one of ours.
    BadMagic,
    /// Ours, but a version we do not speak.
    UnsupportedVersion(u8),
    /// Unknown packet type.
    UnknownType(u8),
    /// Unknown flag bits or a non-zero reserved byte.
    BadFlags,
    /// Checksum mismatch: corrupted on the way.
    Checksum,
    /// Sealed packet, but this endpoint has no key (or the reverse).
    SealMismatch,
    /// A control payload of the wrong size.
    BadPayload,
    /// The AEAD tag does not verify: forged, corrupted, or sealed with another key.
    Auth,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "truncated packet"),
            DecodeError::BadMagic => write!(f, "not an mptunnel packet"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            DecodeError::UnknownType(t) => write!(f, "unknown packet type {t}"),
            DecodeError::BadFlags => write!(f, "unknown flags"),
            DecodeError::Checksum => write!(f, "checksum mismatch"),
            DecodeError::SealMismatch => write!(
                f,
                "sealed/unsealed mismatch (key configured on one side only?)"
            ),
            DecodeError::BadPayload => write!(f, "malformed control payload"),
            DecodeError::Auth => write!(f, "authentication failed (wrong key?)"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn be_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}

/// Encodes an unsealed packet (header, payload, CRC-32) into `out`, replacing its contents.
pub fn encode(out: &mut Vec<u8>, header: &Header, payload: &[u8]) {
    out.clear();
    out.reserve(OVERHEAD + payload.len());
    let mut h = [0u8; HEADER_LEN];
    let mut hdr = *header;
    hdr.flags &= !FLAG_SEALED;
    hdr.write(&mut h);
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(out);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Decodes an unsealed packet, verifying its checksum. Returns the header and the payload.
pub fn decode(bytes: &[u8]) -> Result<(Header, &[u8]), DecodeError> {
    let header = Header::parse(bytes)?;
    if header.flags & FLAG_SEALED != 0 {
        return Err(DecodeError::SealMismatch);
    }
    if bytes.len() < OVERHEAD {
        return Err(DecodeError::Truncated);
    }
    let body_end = bytes.len() - CHECKSUM_LEN;
    let want = u32::from_be_bytes([
        bytes[body_end],
        bytes[body_end + 1],
        bytes[body_end + 2],
        bytes[body_end + 3],
    ]);
    if crc32fast::hash(&bytes[..body_end]) != want {
        return Err(DecodeError::Checksum);
    }
    Ok((header, &bytes[HEADER_LEN..body_end]))
}

/// Payload of a PROBE: an opaque token the peer echoes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    /// Sender-private value (a timestamp for RTT, or a random validation token).
    pub token: u64,
}

/// Length of a PROBE payload.
pub const PROBE_LEN: usize = 8;

impl Probe {
    /// Serializes the payload.
    pub fn to_bytes(self) -> [u8; PROBE_LEN] {
        self.token.to_be_bytes()
    }

    /// Parses the payload; extra bytes (padding) are allowed and ignored.
    pub fn parse(p: &[u8]) -> Result<Self, DecodeError> {
        if p.len() < PROBE_LEN {
            return Err(DecodeError::BadPayload);
        }
        Ok(Probe { token: be_u64(p) })
    }
}

/// Payload of a PROBE_ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeAck {
    /// Sequence number of the probe being answered.
    pub echo_seq: u64,
    /// The probe's token, echoed.
    pub echo_token: u64,
    /// How many probes the acker has received on this path from the prober's current epoch
    /// (and hence how many acks it has sent): lets the prober compute loss in each direction.
    pub probes_received: u64,
}

/// Length of a PROBE_ACK payload.
pub const PROBE_ACK_LEN: usize = 24;

impl ProbeAck {
    /// Serializes the payload.
    pub fn to_bytes(self) -> [u8; PROBE_ACK_LEN] {
        let mut b = [0u8; PROBE_ACK_LEN];
        b[0..8].copy_from_slice(&self.echo_seq.to_be_bytes());
        b[8..16].copy_from_slice(&self.echo_token.to_be_bytes());
        b[16..24].copy_from_slice(&self.probes_received.to_be_bytes());
        b
    }

    /// Parses the payload.
    pub fn parse(p: &[u8]) -> Result<Self, DecodeError> {
        if p.len() < PROBE_ACK_LEN {
            return Err(DecodeError::BadPayload);
        }
        Ok(ProbeAck {
            echo_seq: be_u64(&p[0..8]),
            echo_token: be_u64(&p[8..16]),
            probes_received: be_u64(&p[16..24]),
        })
    }
}

/// Payload of a CHALLENGE: "prove you hold the key now, under this epoch".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The session whose peer epoch is being checked.
    pub session: u64,
    /// The epoch the challenger saw and wants confirmed.
    pub epoch: u64,
    /// Fresh random value the response must echo.
    pub nonce: u128,
    /// How long the challenger has been running, in µs: the responder treats what it sent
    /// before the challenger started as possibly delivered already (to a previous instance).
    pub uptime_us: u64,
}

/// Length of a CHALLENGE payload.
pub const CHALLENGE_LEN: usize = 40;

impl Challenge {
    /// Serializes the payload.
    pub fn to_bytes(self) -> [u8; CHALLENGE_LEN] {
        let mut b = [0u8; CHALLENGE_LEN];
        b[0..8].copy_from_slice(&self.session.to_be_bytes());
        b[8..16].copy_from_slice(&self.epoch.to_be_bytes());
        b[16..32].copy_from_slice(&self.nonce.to_be_bytes());
        b[32..40].copy_from_slice(&self.uptime_us.to_be_bytes());
        b
    }

    /// Parses the payload.
    pub fn parse(p: &[u8]) -> Result<Self, DecodeError> {
        if p.len() < CHALLENGE_LEN {
            return Err(DecodeError::BadPayload);
        }
        let mut n = [0u8; 16];
        n.copy_from_slice(&p[16..32]);
        Ok(Challenge {
            session: be_u64(&p[0..8]),
            epoch: be_u64(&p[8..16]),
            nonce: u128::from_be_bytes(n),
            uptime_us: be_u64(&p[32..40]),
        })
    }
}

/// Payload of a RESPONSE: the challenge echoed, sealed under the responder's epoch, plus the
/// lowest sequence the responder sent recently (older ones cannot be in flight any more).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// The challenge being answered.
    pub challenge: Challenge,
    /// Packets of this session with a lower sequence are refused by the challenger.
    pub fresh_from: u64,
}

/// Length of a RESPONSE payload.
pub const RESPONSE_LEN: usize = CHALLENGE_LEN + 8;

impl Response {
    /// Serializes the payload.
    pub fn to_bytes(self) -> [u8; RESPONSE_LEN] {
        let mut b = [0u8; RESPONSE_LEN];
        b[..CHALLENGE_LEN].copy_from_slice(&self.challenge.to_bytes());
        b[CHALLENGE_LEN..].copy_from_slice(&self.fresh_from.to_be_bytes());
        b
    }

    /// Parses the payload.
    pub fn parse(p: &[u8]) -> Result<Self, DecodeError> {
        if p.len() < RESPONSE_LEN {
            return Err(DecodeError::BadPayload);
        }
        Ok(Response {
            challenge: Challenge::parse(p)?,
            fresh_from: be_u64(&p[CHALLENGE_LEN..RESPONSE_LEN]),
        })
    }
}

#[cfg(test)]
mod tests {
    /// docs/PROTOCOL.md's table of types gives each control payload's length: the code's.
    #[test]
    fn documented_payload_lengths_match() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        for (name, len) in [
            ("PROBE", PROBE_LEN),
            ("PROBE_ACK", PROBE_ACK_LEN),
            ("CHALLENGE", CHALLENGE_LEN),
            ("RESPONSE", RESPONSE_LEN),
        ] {
            let row = doc
                .lines()
                .find(|l| l.split('|').nth(2).map(str::trim) == Some(name))
                .unwrap_or_else(|| panic!("no row for {name}"));
            assert!(row.contains(&format!("({len} bytes")), "{name}: {row}");
        }
    }

    use super::*;
    use proptest::prelude::*;

    fn hdr(ptype: PacketType) -> Header {
        Header {
            ptype,
            flags: 0,
            session: 0x0102030405060708,
            epoch: 0x1112131415161718,
            seq: 42,
        }
    }

    #[test]
    fn layout_is_as_documented() {
        let mut out = Vec::new();
        encode(&mut out, &hdr(PacketType::Data), b"hi");
        assert_eq!(out.len(), OVERHEAD + 2);
        assert_eq!(out[0], 0xD1);
        assert_eq!(out[1], 1);
        assert_eq!(&out[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            &out[12..20],
            &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
        assert_eq!(&out[20..28], &42u64.to_be_bytes());
        assert_eq!(&out[28..30], b"hi");
        let crc = crc32fast::hash(&out[..30]);
        assert_eq!(&out[30..34], &crc.to_be_bytes());
    }

    #[test]
    fn rejects_bad_magic_version_type_flags() {
        let mut out = Vec::new();
        encode(&mut out, &hdr(PacketType::Data), b"x");
        let mut b = out.clone();
        b[0] = 0x00;
        assert_eq!(decode(&b), Err(DecodeError::BadMagic));
        b[0] = 0xD2;
        assert_eq!(decode(&b), Err(DecodeError::UnsupportedVersion(2)));
        let mut b = out.clone();
        b[1] = 99;
        assert_eq!(decode(&b), Err(DecodeError::UnknownType(99)));
        let mut b = out.clone();
        b[2] = 0x80;
        assert_eq!(decode(&b), Err(DecodeError::BadFlags));
        let mut b = out.clone();
        b[2] = FLAG_SEALED;
        assert_eq!(decode(&b), Err(DecodeError::SealMismatch));
        assert_eq!(decode(&out[..10]), Err(DecodeError::Truncated));
        assert_eq!(decode(&out[..HEADER_LEN + 2]), Err(DecodeError::Truncated));
    }

    #[test]
    fn every_single_byte_flip_is_rejected() {
        let mut out = Vec::new();
        encode(&mut out, &hdr(PacketType::Data), b"payload bytes here");
        for i in 0..out.len() {
            for bit in 0..8 {
                let mut b = out.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b).is_err(), "flip of byte {i} bit {bit} accepted");
            }
        }
    }

    #[test]
    fn control_payloads_round_trip() {
        let p = Probe { token: 77 };
        assert_eq!(Probe::parse(&p.to_bytes()), Ok(p));
        let a = ProbeAck {
            echo_seq: 1,
            echo_token: 2,
            probes_received: 3,
        };
        assert_eq!(ProbeAck::parse(&a.to_bytes()), Ok(a));
        assert_eq!(ProbeAck::parse(&[0; 5]), Err(DecodeError::BadPayload));
        assert_eq!(Probe::parse(&[]), Err(DecodeError::BadPayload));
        let c = Challenge {
            session: 1,
            epoch: 2,
            nonce: u128::MAX - 3,
            uptime_us: 4,
        };
        assert_eq!(Challenge::parse(&c.to_bytes()), Ok(c));
        let r = Response {
            challenge: c,
            fresh_from: 99,
        };
        assert_eq!(Response::parse(&r.to_bytes()), Ok(r));
        assert_eq!(Response::parse(&c.to_bytes()), Err(DecodeError::BadPayload));
    }

    proptest! {
        #[test]
        fn round_trip(t in 1u8..=8, session: u64, epoch: u64, seq: u64,
                      payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let h = Header { ptype: PacketType::from_u8(t).unwrap(), flags: 0, session, epoch, seq };
            let mut out = Vec::new();
            encode(&mut out, &h, &payload);
            let (h2, p2) = decode(&out).unwrap();
            prop_assert_eq!(h2, h);
            prop_assert_eq!(p2, &payload[..]);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
        }
    }
}
