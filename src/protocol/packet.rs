//! The v2 packet format: the header, the unsealed codec (CRC-32 trailer) and the control
//! payloads. The byte layout is documented once, in docs/PROTOCOL.md; the sealed codec is
//! in `crypto`.

use std::fmt;

/// First byte of every packet: high nibble is the magic `0xD`, low nibble the version (2).
pub const MAGIC_VERSION: u8 = 0xD2;
/// The first byte of the version before (no direction, no path index): refused, with a
/// warning that names it.
pub const MAGIC_VERSION_1: u8 = 0xD1;
/// Fixed header length in bytes.
pub const HEADER_LEN: usize = 28;
/// Offset of the path index in the header.
pub const PATH_OFFSET: usize = 3;
/// Trailer of an unsealed packet: CRC-32 over header and payload.
pub const CHECKSUM_LEN: usize = 4;
/// The AEAD tag of a sealed packet.
pub const TAG_LEN: usize = 16;
/// The path MAC of a sealed packet (over the tag and the path index).
pub const PATH_MAC_LEN: usize = 8;
/// Per-packet overhead of an unsealed packet.
pub const OVERHEAD: usize = HEADER_LEN + CHECKSUM_LEN;
/// Per-packet overhead of a sealed packet.
pub const SEALED_OVERHEAD: usize = HEADER_LEN + TAG_LEN + PATH_MAC_LEN;
/// Largest UDP payload over IPv4 (65,535 - 20 IP - 8 UDP).
pub const MAX_UDP_PAYLOAD: usize = 65_507;
/// Largest application datagram the tunnel carries unsealed (it is never split).
pub const MAX_DATAGRAM: usize = MAX_UDP_PAYLOAD - OVERHEAD;

/// Flag bit: the trailer is an AEAD tag and a path MAC, not a checksum.
pub const FLAG_SEALED: u8 = 0x01;
/// Flag bit: the sender is a server (clear: a client). Authenticated with a key.
pub const FLAG_FROM_SERVER: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_SEALED | FLAG_FROM_SERVER;

/// Session id 0 is reserved for path-level control packets (PROBE, PROBE_ACK, CHALLENGE,
/// RESPONSE, ANNOUNCE).
pub const CONTROL_SESSION: u64 = 0;

/// Most paths a client may have (the path index is one byte, 0 to 63).
pub const MAX_PATH_INDEX: u8 = 63;

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
    /// Freshness (and return-routability) challenge about a peer epoch.
    Challenge = 5,
    /// Answer to a challenge.
    Response = 6,
    /// Reserved (many targets): a client asks for a target for a session.
    TargetRequest = 7,
    /// Reserved (many targets): the server refuses a target request.
    TargetDeny = 8,
    /// Reserved (many targets): the server accepts a target request.
    TargetAck = 9,
    /// Reserved (FEC): a data or parity shard of a coding group.
    FecShard = 10,
    /// Reserved: the client announces its scheduling mode and coding scheme.
    Announce = 11,
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
            9 => Self::TargetAck,
            10 => Self::FecShard,
            11 => Self::Announce,
            _ => return None,
        })
    }

    /// True for the types this version parses but does not act on yet (counted as
    /// unsupported and dropped).
    pub fn reserved(self) -> bool {
        matches!(
            self,
            Self::TargetRequest | Self::TargetDeny | Self::TargetAck | Self::FecShard
        )
    }
}

/// Which end sent a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// mpclient (or an in-process socket).
    Client,
    /// mpserver (or an in-process listener).
    Server,
}

/// The fixed header of a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// What the packet is.
    pub ptype: PacketType,
    /// Flag bits ([`FLAG_SEALED`], [`FLAG_FROM_SERVER`]).
    pub flags: u8,
    /// The client's path index of this copy (0 to 63).
    pub path: u8,
    /// The flow this packet belongs to; [`CONTROL_SESSION`] for path control.
    pub session: u64,
    /// The sender's epoch (random per endpoint start).
    pub epoch: u64,
    /// Sequence number: one counter per sender epoch for all its sessions (control packets
    /// have a counter of their own).
    pub seq: u64,
}

impl Header {
    /// Who sent it.
    pub fn sender(&self) -> Sender {
        if self.flags & FLAG_FROM_SERVER != 0 {
            Sender::Server
        } else {
            Sender::Client
        }
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn write(&self, out: &mut [u8; HEADER_LEN]) {
        out[0] = MAGIC_VERSION;
        out[1] = self.ptype as u8;
        out[2] = self.flags;
        out[3] = self.path;
        out[4..12].copy_from_slice(&self.session.to_be_bytes());
        out[12..20].copy_from_slice(&self.epoch.to_be_bytes());
        out[20..28].copy_from_slice(&self.seq.to_be_bytes());
    }

    /// Parses a header; checks magic, version, type, flags and path index but not the
    /// trailer.
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
        if flags & !KNOWN_FLAGS != 0 || bytes[PATH_OFFSET] > MAX_PATH_INDEX {
            return Err(DecodeError::BadFlags);
        }
        Ok(Header {
            ptype,
            flags,
            path: bytes[PATH_OFFSET],
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
    /// Unknown flag bits, or a path index out of range.
    BadFlags,
    /// Checksum mismatch: corrupted on the way.
    Checksum,
    /// Sealed packet, but this endpoint has no key (or the reverse).
    SealMismatch,
    /// A control payload too short for its type.
    BadPayload,
    /// The AEAD tag or the path MAC does not verify: forged, corrupted, or sealed with
    /// another key.
    Auth,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "truncated packet"),
            DecodeError::BadMagic => write!(f, "not an mptunnel packet"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            DecodeError::UnknownType(t) => write!(f, "unknown packet type {t}"),
            DecodeError::BadFlags => write!(f, "unknown flags or path index"),
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

fn be_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_be_bytes(a)
}

/// Writes the header (path index 0) and payload of an unsealed packet into `out`: the
/// template every copy is made from with [`finish_copy`].
pub fn prepare(out: &mut Vec<u8>, header: &Header, payload: &[u8]) {
    out.clear();
    out.reserve(OVERHEAD + payload.len());
    let mut h = [0u8; HEADER_LEN];
    let mut hdr = *header;
    hdr.flags &= !FLAG_SEALED;
    hdr.path = 0;
    hdr.write(&mut h);
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
}

/// One copy of an unsealed packet for path `path`: the template with its path index, then
/// the CRC-32 over all of it.
pub fn finish_copy(template: &[u8], path: u8, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(template);
    out[PATH_OFFSET] = path;
    let crc = crc32fast::hash(out);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// Encodes a whole unsealed packet (for `header.path`) into `out`.
pub fn encode(out: &mut Vec<u8>, header: &Header, payload: &[u8]) {
    let mut t = Vec::new();
    prepare(&mut t, header, payload);
    finish_copy(&t, header.path, out);
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

/// Payload of a PROBE: an opaque token the peer echoes back, and what the prober has
/// measured on that path (so the acker can show both ends' view of it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Probe {
    /// Sender-private value (a probe number for RTT, or a random validation token).
    pub token: u64,
    /// The prober's figures for this path (zero in a validation probe).
    pub figures: PathFigures,
}

/// A path's figures as its prober measured them, carried in each PROBE.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathFigures {
    /// Smoothed RTT in µs (0: not measured yet).
    pub rtt_us: u32,
    /// RTT variation (jitter) in µs.
    pub jitter_us: u32,
    /// Loss prober → acker, in 1/10,000 (`u16::MAX`: not measured yet).
    pub loss_out: u16,
    /// Loss acker → prober, in 1/10,000 (`u16::MAX`: not measured yet).
    pub loss_in: u16,
    /// The path's state at the prober: 0 up, 1 lossy, 2 down.
    pub state: u8,
    /// Bit 0: a backup path.
    pub flags: u8,
}

/// `PathFigures::loss_*` when not measured.
pub const LOSS_UNKNOWN: u16 = u16::MAX;

/// Length of a PROBE payload.
pub const PROBE_LEN: usize = 24;

impl Probe {
    /// A probe with a token only (validation probes).
    pub fn token(token: u64) -> Probe {
        Probe {
            token,
            figures: PathFigures {
                loss_out: LOSS_UNKNOWN,
                loss_in: LOSS_UNKNOWN,
                ..PathFigures::default()
            },
        }
    }

    /// Serializes the payload.
    pub fn to_bytes(self) -> [u8; PROBE_LEN] {
        let f = self.figures;
        let mut b = [0u8; PROBE_LEN];
        b[0..8].copy_from_slice(&self.token.to_be_bytes());
        b[8..12].copy_from_slice(&f.rtt_us.to_be_bytes());
        b[12..16].copy_from_slice(&f.jitter_us.to_be_bytes());
        b[16..18].copy_from_slice(&f.loss_out.to_be_bytes());
        b[18..20].copy_from_slice(&f.loss_in.to_be_bytes());
        b[20] = f.state;
        b[21] = f.flags;
        b
    }

    /// Parses the payload; extra bytes are allowed and ignored (as for every control
    /// payload: later versions may add fields).
    pub fn parse(p: &[u8]) -> Result<Self, DecodeError> {
        if p.len() < PROBE_LEN {
            return Err(DecodeError::BadPayload);
        }
        let u32_at = |i: usize| u32::from_be_bytes([p[i], p[i + 1], p[i + 2], p[i + 3]]);
        let u16_at = |i: usize| u16::from_be_bytes([p[i], p[i + 1]]);
        Ok(Probe {
            token: be_u64(p),
            figures: PathFigures {
                rtt_us: u32_at(8),
                jitter_us: u32_at(12),
                loss_out: u16_at(16),
                loss_in: u16_at(18),
                state: p[20],
                flags: p[21],
            },
        })
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
    /// How many DATA copies the acker has received on this path from the prober's current
    /// epoch (duplicates included): loss measured on the data itself.
    pub data_received: u64,
    /// How many DATA copies the acker has sent on this path to the prober's current epoch:
    /// with the prober's own count, the loss of the acker's data on the way back.
    pub data_sent: u64,
}

/// Length of a PROBE_ACK payload.
pub const PROBE_ACK_LEN: usize = 40;

impl ProbeAck {
    /// Serializes the payload.
    pub fn to_bytes(self) -> [u8; PROBE_ACK_LEN] {
        let mut b = [0u8; PROBE_ACK_LEN];
        b[0..8].copy_from_slice(&self.echo_seq.to_be_bytes());
        b[8..16].copy_from_slice(&self.echo_token.to_be_bytes());
        b[16..24].copy_from_slice(&self.probes_received.to_be_bytes());
        b[24..32].copy_from_slice(&self.data_received.to_be_bytes());
        b[32..40].copy_from_slice(&self.data_sent.to_be_bytes());
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
            data_received: be_u64(&p[24..32]),
            data_sent: be_u64(&p[32..40]),
        })
    }
}

/// Payload of a CHALLENGE: "prove you hold the key now, under this epoch" (and, without a
/// key, that you receive what is sent to you).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The session that brought the epoch (informational).
    pub session: u64,
    /// The epoch the challenger saw and wants confirmed.
    pub epoch: u64,
    /// Fresh random value the response must echo.
    pub nonce: u128,
    /// How far back, in µs, the challenger may have accepted packets of that epoch: the
    /// responder treats what it sent before then as possibly delivered already.
    pub age_us: u64,
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
        b[32..40].copy_from_slice(&self.age_us.to_be_bytes());
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
            age_us: be_u64(&p[32..40]),
        })
    }
}

/// Payload of a RESPONSE: the challenge echoed, sealed under the responder's epoch, plus the
/// first sequence the responder sent within the challenge's age.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response {
    /// The challenge being answered.
    pub challenge: Challenge,
    /// Packets of the responder's epoch with a lower sequence are refused by the challenger.
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

/// Payload of an ANNOUNCE: the client's scheduling mode and its current choice of paths,
/// for the server to schedule that client's replies the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Announce {
    /// Mode number: 0 redundant, 1 failover, 2 k-best, 3 balance (others: later versions;
    /// a server treats an unknown one as redundant).
    pub mode: u8,
    /// The mode's parameter (k of k-best, data shards of FEC).
    pub k: u8,
    /// A second parameter (parity shards of FEC).
    pub m: u8,
    /// Flag bits, none defined yet.
    pub flags: u8,
    /// The paths (by index) the client wants replies on now; 0 means all.
    pub mask: u64,
    /// In `balance`: each path's share of the replies (index order, 0-255; missing ones
    /// are 0). Zero-length otherwise.
    pub weights: [u8; 64],
    /// How many entries of `weights` are meaningful (at most 64).
    pub weights_len: u8,
}

/// Length of an ANNOUNCE payload without its weights (which follow, one byte per path).
pub const ANNOUNCE_LEN: usize = 16;
/// Longest ANNOUNCE payload.
pub const ANNOUNCE_MAX: usize = ANNOUNCE_LEN + 64;

impl Default for Announce {
    fn default() -> Self {
        Announce {
            mode: 0,
            k: 0,
            m: 0,
            flags: 0,
            mask: 0,
            weights: [0; 64],
            weights_len: 0,
        }
    }
}

impl Announce {
    /// Serializes the payload into `out` (at least [`ANNOUNCE_MAX`] bytes); returns its length.
    pub fn write(&self, out: &mut [u8; ANNOUNCE_MAX]) -> usize {
        out[..ANNOUNCE_LEN].fill(0);
        out[0] = self.mode;
        out[1] = self.k;
        out[2] = self.m;
        out[3] = self.flags;
        out[8..16].copy_from_slice(&self.mask.to_be_bytes());
        let n = usize::from(self.weights_len.min(64));
        out[ANNOUNCE_LEN..ANNOUNCE_LEN + n].copy_from_slice(&self.weights[..n]);
        ANNOUNCE_LEN + n
    }

    /// Parses the payload; weights beyond 64 paths are ignored.
    pub fn parse(p: &[u8]) -> Result<Self, DecodeError> {
        if p.len() < ANNOUNCE_LEN {
            return Err(DecodeError::BadPayload);
        }
        let w = &p[ANNOUNCE_LEN..p.len().min(ANNOUNCE_MAX)];
        let mut weights = [0u8; 64];
        weights[..w.len()].copy_from_slice(w);
        Ok(Announce {
            mode: p[0],
            k: p[1],
            m: p[2],
            flags: p[3],
            mask: be_u64(&p[8..16]),
            weights,
            weights_len: w.len() as u8,
        })
    }
}

/// Payload of a TARGET_REQUEST (reserved): the target a client asks for a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetRequest {
    /// Matches the ACK or DENY to the request.
    pub request_id: u32,
    /// The target.
    pub target: std::net::SocketAddr,
}

impl TargetRequest {
    /// Serializes: `request_id u32`, `port u16`, `family u8` (4 or 6), a zero byte, then 4
    /// or 16 address bytes.
    pub fn to_bytes(self) -> Vec<u8> {
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&self.request_id.to_be_bytes());
        b.extend_from_slice(&self.target.port().to_be_bytes());
        match self.target.ip() {
            std::net::IpAddr::V4(a) => {
                b.extend_from_slice(&[4, 0]);
                b.extend_from_slice(&a.octets());
            }
            std::net::IpAddr::V6(a) => {
                b.extend_from_slice(&[6, 0]);
                b.extend_from_slice(&a.octets());
            }
        }
        b
    }

    /// Parses the payload.
    pub fn parse(p: &[u8]) -> Result<Self, DecodeError> {
        if p.len() < 12 {
            return Err(DecodeError::BadPayload);
        }
        let port = u16::from_be_bytes([p[4], p[5]]);
        let ip: std::net::IpAddr = match p[6] {
            4 => std::net::Ipv4Addr::new(p[8], p[9], p[10], p[11]).into(),
            6 if p.len() >= 24 => {
                let mut a = [0u8; 16];
                a.copy_from_slice(&p[8..24]);
                std::net::Ipv6Addr::from(a).into()
            }
            _ => return Err(DecodeError::BadPayload),
        };
        Ok(TargetRequest {
            request_id: be_u32(p),
            target: (ip, port).into(),
        })
    }
}

/// Payload of a TARGET_ACK or TARGET_DENY (reserved): the request answered, and why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetAnswer {
    /// The request answered.
    pub request_id: u32,
    /// 0 for an ACK; a reason for a DENY (1: not allowed, 2: unreachable).
    pub reason: u8,
}

/// Length of a TARGET_ACK or TARGET_DENY payload.
pub const TARGET_ANSWER_LEN: usize = 8;

impl TargetAnswer {
    /// Serializes the payload.
    pub fn to_bytes(self) -> [u8; TARGET_ANSWER_LEN] {
        let mut b = [0u8; TARGET_ANSWER_LEN];
        b[..4].copy_from_slice(&self.request_id.to_be_bytes());
        b[4] = self.reason;
        b
    }

    /// Parses the payload.
    pub fn parse(p: &[u8]) -> Result<Self, DecodeError> {
        if p.len() < TARGET_ANSWER_LEN {
            return Err(DecodeError::BadPayload);
        }
        Ok(TargetAnswer {
            request_id: be_u32(p),
            reason: p[4],
        })
    }
}

/// The header of a FEC_SHARD payload (reserved); the shard's bytes follow it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FecShard {
    /// The coding group.
    pub group: u32,
    /// The shard's index in the group (data shards first).
    pub index: u8,
    /// Data shards in the group.
    pub data_shards: u8,
    /// Parity shards in the group.
    pub parity_shards: u8,
}

/// Length of a FEC_SHARD payload's header.
pub const FEC_SHARD_LEN: usize = 8;

impl FecShard {
    /// Serializes the shard header.
    pub fn to_bytes(self) -> [u8; FEC_SHARD_LEN] {
        let mut b = [0u8; FEC_SHARD_LEN];
        b[..4].copy_from_slice(&self.group.to_be_bytes());
        b[4] = self.index;
        b[5] = self.data_shards;
        b[6] = self.parity_shards;
        b
    }

    /// Parses the shard header; returns it and the shard's bytes.
    pub fn parse(p: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        if p.len() < FEC_SHARD_LEN {
            return Err(DecodeError::BadPayload);
        }
        let s = FecShard {
            group: be_u32(p),
            index: p[4],
            data_shards: p[5],
            parity_shards: p[6],
        };
        if s.index >= s.data_shards.saturating_add(s.parity_shards) {
            return Err(DecodeError::BadPayload);
        }
        Ok((s, &p[FEC_SHARD_LEN..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// docs/PROTOCOL.md's table of types gives each control payload's length: the code's.
    #[test]
    fn documented_payload_lengths_match() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        for (name, len) in [
            ("PROBE", PROBE_LEN),
            ("PROBE_ACK", PROBE_ACK_LEN),
            ("CHALLENGE", CHALLENGE_LEN),
            ("RESPONSE", RESPONSE_LEN),
            ("ANNOUNCE", ANNOUNCE_LEN),
            ("TARGET_ACK", TARGET_ANSWER_LEN),
            ("TARGET_DENY", TARGET_ANSWER_LEN),
        ] {
            let row = doc
                .lines()
                .find(|l| l.split('|').nth(2).map(str::trim) == Some(name))
                .unwrap_or_else(|| panic!("no row for {name}"));
            assert!(row.contains(&format!("({len} bytes")), "{name}: {row}");
        }
    }

    fn hdr(ptype: PacketType) -> Header {
        Header {
            ptype,
            flags: 0,
            path: 5,
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
        assert_eq!(out[0], 0xD2);
        assert_eq!(out[1], 1);
        assert_eq!(out[2], 0);
        assert_eq!(out[3], 5);
        assert_eq!(&out[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            &out[12..20],
            &[0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18]
        );
        assert_eq!(&out[20..28], &42u64.to_be_bytes());
        assert_eq!(&out[28..30], b"hi");
        let crc = crc32fast::hash(&out[..30]);
        assert_eq!(&out[30..34], &crc.to_be_bytes());
        let mut h = hdr(PacketType::Close);
        h.flags = FLAG_FROM_SERVER;
        encode(&mut out, &h, b"");
        assert_eq!(out[2], 2);
        assert_eq!(decode(&out).unwrap().0.sender(), Sender::Server);
    }

    #[test]
    fn copies_differ_only_in_path_and_trailer() {
        let mut t = Vec::new();
        prepare(&mut t, &hdr(PacketType::Data), b"same bytes");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        finish_copy(&t, 0, &mut a);
        finish_copy(&t, 7, &mut b);
        assert_eq!(decode(&a).unwrap().0.path, 0);
        assert_eq!(decode(&b).unwrap().0.path, 7);
        assert_eq!(a[4..a.len() - 4], b[4..b.len() - 4]);
    }

    #[test]
    fn rejects_bad_magic_version_type_flags_and_path() {
        let mut out = Vec::new();
        encode(&mut out, &hdr(PacketType::Data), b"x");
        let mut b = out.clone();
        b[0] = 0x00;
        assert_eq!(decode(&b), Err(DecodeError::BadMagic));
        b[0] = MAGIC_VERSION_1;
        assert_eq!(decode(&b), Err(DecodeError::UnsupportedVersion(1)));
        let mut b = out.clone();
        b[1] = 99;
        assert_eq!(decode(&b), Err(DecodeError::UnknownType(99)));
        let mut b = out.clone();
        b[2] = 0x80;
        assert_eq!(decode(&b), Err(DecodeError::BadFlags));
        let mut b = out.clone();
        b[3] = 64;
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
    fn payloads_round_trip_and_accept_trailing_bytes() {
        let p = Probe::token(77);
        assert_eq!(Probe::parse(&p.to_bytes()), Ok(p));
        let a = ProbeAck {
            echo_seq: 1,
            echo_token: 2,
            probes_received: 3,
            data_received: 4,
            data_sent: 5,
        };
        assert_eq!(ProbeAck::parse(&a.to_bytes()), Ok(a));
        let mut longer = a.to_bytes().to_vec();
        longer.extend_from_slice(&[9; 7]);
        assert_eq!(ProbeAck::parse(&longer), Ok(a));
        assert_eq!(ProbeAck::parse(&[0; 32]), Err(DecodeError::BadPayload));
        assert_eq!(Probe::parse(&[]), Err(DecodeError::BadPayload));
        let c = Challenge {
            session: 1,
            epoch: 2,
            nonce: u128::MAX - 3,
            age_us: 4,
        };
        assert_eq!(Challenge::parse(&c.to_bytes()), Ok(c));
        let r = Response {
            challenge: c,
            fresh_from: 99,
        };
        assert_eq!(Response::parse(&r.to_bytes()), Ok(r));
        assert_eq!(Response::parse(&c.to_bytes()), Err(DecodeError::BadPayload));
        let mut an = Announce {
            mode: 3,
            k: 2,
            m: 3,
            mask: 0b101,
            weights_len: 3,
            ..Announce::default()
        };
        an.weights[..3].copy_from_slice(&[200, 0, 55]);
        let mut buf = [0u8; ANNOUNCE_MAX];
        let n = an.write(&mut buf);
        assert_eq!(n, ANNOUNCE_LEN + 3);
        assert_eq!(Announce::parse(&buf[..n]), Ok(an));
        assert_eq!(
            Announce::parse(&buf[..ANNOUNCE_LEN - 1]),
            Err(DecodeError::BadPayload)
        );
        let probe = Probe {
            token: 9,
            figures: PathFigures {
                rtt_us: 20_000,
                jitter_us: 1_500,
                loss_out: 1234,
                loss_in: LOSS_UNKNOWN,
                state: 1,
                flags: 1,
            },
        };
        assert_eq!(Probe::parse(&probe.to_bytes()), Ok(probe));
        for target in ["10.0.0.1:53", "[2001:db8::1]:443"] {
            let t = TargetRequest {
                request_id: 7,
                target: target.parse().unwrap(),
            };
            assert_eq!(TargetRequest::parse(&t.to_bytes()), Ok(t));
        }
        assert!(TargetRequest::parse(&[0; 11]).is_err());
        let ta = TargetAnswer {
            request_id: 9,
            reason: 1,
        };
        assert_eq!(TargetAnswer::parse(&ta.to_bytes()), Ok(ta));
        let f = FecShard {
            group: 3,
            index: 4,
            data_shards: 4,
            parity_shards: 2,
        };
        let mut bytes = f.to_bytes().to_vec();
        bytes.extend_from_slice(b"shard");
        assert_eq!(FecShard::parse(&bytes), Ok((f, &b"shard"[..])));
        bytes[4] = 6;
        assert!(FecShard::parse(&bytes).is_err(), "index past the group");
    }

    proptest! {
        #[test]
        fn round_trip(t in 1u8..=11, flags in 0u8..=2, path in 0u8..=63, session: u64,
                      epoch: u64, seq: u64,
                      payload in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let flags = flags & FLAG_FROM_SERVER;
            let h = Header { ptype: PacketType::from_u8(t).unwrap(), flags, path, session, epoch, seq };
            let mut out = Vec::new();
            encode(&mut out, &h, &payload);
            let (h2, p2) = decode(&out).unwrap();
            prop_assert_eq!(h2, h);
            prop_assert_eq!(p2, &payload[..]);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&bytes);
            let _ = TargetRequest::parse(&bytes);
            let _ = FecShard::parse(&bytes);
        }
    }
}
