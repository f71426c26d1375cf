//! Keys and the packet codec for both modes: unsealed (CRC-32 trailer) and sealed
//! (XChaCha20-Poly1305 with a key per direction, plus a MAC over each copy's path index).
//! The construction and the reasons it is sound are in docs/PROTOCOL.md.

use std::fmt;

use base64::Engine;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::packet::{
    self, DecodeError, Header, Sender, FLAG_FROM_SERVER, FLAG_SEALED, HEADER_LEN, MAX_UDP_PAYLOAD,
    PATH_MAC_LEN, PATH_OFFSET, SEALED_OVERHEAD, TAG_LEN,
};

/// A 32-byte pre-shared key; its bytes are wiped when it is dropped.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; 32]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A new random key from the OS generator.
    pub fn generate() -> Result<Key, String> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| format!("no system randomness: {e}"))?;
        let key = Key(k);
        k.zeroize();
        Ok(key)
    }

    /// The raw bytes.
    pub fn from_bytes(b: [u8; 32]) -> Key {
        Key(b)
    }

    /// Parses the 44-character base64 form (as WireGuard writes keys), naming what is wrong
    /// but never echoing the text.
    pub fn from_base64(s: &str) -> Result<Key, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the key is empty".into());
        }
        if s.len() != 44 {
            return Err(format!(
                "a key is 44 base64 characters (32 bytes), this one has {} characters",
                s.len()
            ));
        }
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| "the key is not valid base64".to_string())?;
        let key = <[u8; 32]>::try_from(bytes.as_slice())
            .map(Key)
            .map_err(|_| format!("a key is 32 bytes, this one decodes to {}", bytes.len()));
        bytes.zeroize();
        key
    }

    /// The 44-character base64 form.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// A 32-byte key for `purpose`, derived with HKDF-SHA256.
    fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        let hk = hkdf::Hkdf::<Sha256>::new(Some(b"mptunnel v2"), &self.0);
        let mut out = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 8160: expand cannot fail.
        let _ = hk.expand(purpose, &mut out);
        out
    }
}

/// The derived keys of one direction.
struct Direction {
    aead: XChaCha20Poly1305,
    path_mac: Hmac<Sha256>,
}

impl Direction {
    fn new(key: &Key, sender: Sender) -> Direction {
        let (aead, mac): (&[u8], &[u8]) = match sender {
            Sender::Client => (b"client to server: aead", b"client to server: path mac"),
            Sender::Server => (b"server to client: aead", b"server to client: path mac"),
        };
        let mut a = key.derive(aead);
        let mut m = key.derive(mac);
        let d = Direction {
            aead: XChaCha20Poly1305::new(&a.into()),
            // HMAC takes keys of any length.
            path_mac: <Hmac<Sha256> as Mac>::new_from_slice(&m).expect("any key length"),
        };
        a.zeroize();
        m.zeroize();
        d
    }

    /// The MAC of a copy: over its tag and its path index.
    fn mac(&self, tag: &[u8], path: u8) -> Hmac<Sha256> {
        let mut mac = self.path_mac.clone();
        mac.update(tag);
        mac.update(&[path]);
        mac
    }
}

/// Encodes and decodes packets in the endpoint's mode, as sent by `role`.
pub struct Codec {
    role: Sender,
    /// (ours, the peer's) with a key.
    keys: Option<(Direction, Direction)>,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("role", &self.role)
            .field("sealed", &self.keys.is_some())
            .finish()
    }
}

fn nonce(h: &Header) -> XNonce {
    let mut n = [0u8; 24];
    n[0..8].copy_from_slice(&h.session.to_be_bytes());
    n[8..16].copy_from_slice(&h.epoch.to_be_bytes());
    n[16..24].copy_from_slice(&h.seq.to_be_bytes());
    XNonce::from(n)
}

impl Codec {
    /// For an endpoint of `role`: sealed with `key`, or unsealed without one.
    pub fn new(key: Option<&Key>, role: Sender) -> Codec {
        let peer = match role {
            Sender::Client => Sender::Server,
            Sender::Server => Sender::Client,
        };
        Codec {
            role,
            keys: key.map(|k| (Direction::new(k, role), Direction::new(k, peer))),
        }
    }

    /// True in the sealed mode.
    pub fn sealed(&self) -> bool {
        self.keys.is_some()
    }

    /// The role this codec sends as.
    pub fn role(&self) -> Sender {
        self.role
    }

    /// Bytes added to each payload.
    pub fn overhead(&self) -> usize {
        if self.sealed() {
            SEALED_OVERHEAD
        } else {
            packet::OVERHEAD
        }
    }

    /// Largest payload that fits one UDP datagram.
    pub fn max_payload(&self) -> usize {
        MAX_UDP_PAYLOAD - self.overhead()
    }

    /// Encodes a packet once (sealing it, with a key) into `template`, however many copies
    /// then go: each copy is made with [`finish_copy`](Self::finish_copy). The header's
    /// path index and sender flag are set there and here.
    pub fn prepare(&self, template: &mut Vec<u8>, header: &Header, payload: &[u8]) {
        let mut h = *header;
        h.path = 0;
        h.flags = if self.role == Sender::Server {
            FLAG_FROM_SERVER
        } else {
            0
        };
        let Some((ours, _)) = &self.keys else {
            packet::prepare(template, &h, payload);
            return;
        };
        h.flags |= FLAG_SEALED;
        let mut hb = [0u8; HEADER_LEN];
        h.write(&mut hb);
        template.clear();
        template.reserve(SEALED_OVERHEAD + payload.len());
        template.extend_from_slice(&hb);
        template.extend_from_slice(payload);
        // The associated data is the header with path index 0: one seal for every copy.
        match ours
            .aead
            .encrypt_in_place_detached(&nonce(&h), &hb, &mut template[HEADER_LEN..])
        {
            Ok(tag) => template.extend_from_slice(&tag),
            // Encryption cannot fail for lengths under 256 GiB.
            Err(_) => template.clear(),
        }
    }

    /// The copy of a prepared packet for path `path`: its path index, then the checksum
    /// (unsealed) or the path MAC over the tag and the index (sealed).
    pub fn finish_copy(&self, template: &[u8], path: u8, out: &mut Vec<u8>) {
        let Some((ours, _)) = &self.keys else {
            packet::finish_copy(template, path, out);
            return;
        };
        out.clear();
        if template.len() < HEADER_LEN + TAG_LEN {
            return;
        }
        out.extend_from_slice(template);
        out[PATH_OFFSET] = path;
        let tag = &template[template.len() - TAG_LEN..];
        let mac = ours.mac(tag, path).finalize().into_bytes();
        out.extend_from_slice(&mac[..PATH_MAC_LEN]);
    }

    /// Encodes one whole packet (for `header.path`) into `out`.
    pub fn encode(&self, out: &mut Vec<u8>, header: &Header, payload: &[u8]) {
        let mut t = Vec::new();
        self.prepare(&mut t, header, payload);
        self.finish_copy(&t, header.path, out);
    }

    /// Parses the header and checks that the packet's mode matches ours, without verifying
    /// the trailer: enough to refuse reflections and consult the replay window before paying
    /// for decryption.
    pub fn parse(&self, bytes: &[u8]) -> Result<Header, DecodeError> {
        let h = Header::parse(bytes)?;
        let sealed = h.flags & FLAG_SEALED != 0;
        if sealed != self.sealed() {
            return Err(DecodeError::SealMismatch);
        }
        if bytes.len() < self.overhead() {
            return Err(DecodeError::Truncated);
        }
        Ok(h)
    }

    /// Sealed: checks the copy's path MAC (cheap; done before the replay window, so that a
    /// copy whose index a bridge changed never marks it). Unsealed: nothing to check yet.
    pub fn verify_path(&self, bytes: &[u8]) -> Result<(), DecodeError> {
        let Some((_, peer)) = &self.keys else {
            return Ok(());
        };
        if bytes.len() < SEALED_OVERHEAD {
            return Err(DecodeError::Truncated);
        }
        let mac_at = bytes.len() - PATH_MAC_LEN;
        let tag = &bytes[mac_at - TAG_LEN..mac_at];
        peer.mac(tag, bytes[PATH_OFFSET])
            .verify_truncated_left(&bytes[mac_at..])
            .map_err(|_| DecodeError::Auth)
    }

    /// Verifies (and decrypts) a packet whose header [`parse`](Self::parse) accepted.
    /// The payload is returned from `bytes` (unsealed) or decrypted into `scratch` (sealed).
    pub fn open<'a>(
        &self,
        bytes: &'a [u8],
        scratch: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], DecodeError> {
        let Some((_, peer)) = &self.keys else {
            return packet::decode(bytes).map(|(_, p)| p);
        };
        let h = Header::parse(bytes)?;
        if bytes.len() < SEALED_OVERHEAD {
            return Err(DecodeError::Truncated);
        }
        let tag_at = bytes.len() - PATH_MAC_LEN - TAG_LEN;
        scratch.clear();
        scratch.extend_from_slice(&bytes[HEADER_LEN..tag_at]);
        let tag = Tag::from_slice(&bytes[tag_at..tag_at + TAG_LEN]);
        let mut ad = [0u8; HEADER_LEN];
        ad.copy_from_slice(&bytes[..HEADER_LEN]);
        ad[PATH_OFFSET] = 0;
        peer.aead
            .decrypt_in_place_detached(&nonce(&h), &ad, scratch, tag)
            .map_err(|_| DecodeError::Auth)?;
        Ok(&scratch[..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet::PacketType;

    fn hdr() -> Header {
        Header {
            ptype: PacketType::Data,
            flags: 0,
            path: 2,
            session: 7,
            epoch: 9,
            seq: 11,
        }
    }

    fn pair(k: u8) -> (Codec, Codec) {
        let key = Key::from_bytes([k; 32]);
        (
            Codec::new(Some(&key), Sender::Client),
            Codec::new(Some(&key), Sender::Server),
        )
    }

    #[test]
    fn key_text_form() {
        let k = Key::generate().unwrap();
        let s = k.to_base64();
        assert_eq!(s.len(), 44);
        assert_eq!(Key::from_base64(&s).unwrap(), k);
        assert!(Key::from_base64("").unwrap_err().contains("empty"));
        assert!(Key::from_base64("abc")
            .unwrap_err()
            .contains("has 3 characters"));
        let e = Key::from_base64(&"!".repeat(44)).unwrap_err();
        assert!(e.contains("not valid base64") && !e.contains('!'), "{e}");
        assert_eq!(format!("{k:?}"), "Key(..)");
    }

    #[test]
    fn sealed_round_trip_each_direction_and_every_bit_flip_rejected() {
        let (client, server) = pair(3);
        let mut out = Vec::new();
        client.encode(&mut out, &hdr(), b"secret payload");
        assert_eq!(out.len(), SEALED_OVERHEAD + 14);
        assert!(
            !out.windows(6).any(|w| w == b"secret"),
            "payload is encrypted"
        );
        let mut scratch = Vec::new();
        let h = server.parse(&out).unwrap();
        assert_eq!((h.seq, h.path, h.sender()), (11, 2, Sender::Client));
        server.verify_path(&out).unwrap();
        assert_eq!(server.open(&out, &mut scratch).unwrap(), b"secret payload");
        // Its own direction's key does not open it: a reflected packet fails.
        assert_eq!(client.verify_path(&out), Err(DecodeError::Auth));
        assert_eq!(client.open(&out, &mut scratch), Err(DecodeError::Auth));
        for i in 0..out.len() {
            for bit in 0..8 {
                let mut b = out.clone();
                b[i] ^= 1 << bit;
                let ok = server.parse(&b).is_ok()
                    && server.verify_path(&b).is_ok()
                    && server.open(&b, &mut scratch).is_ok();
                assert!(!ok, "flip of byte {i} bit {bit} accepted");
            }
        }
    }

    #[test]
    fn one_seal_many_copies_and_a_changed_index_fails_the_mac() {
        let (client, server) = pair(5);
        let mut t = Vec::new();
        client.prepare(&mut t, &hdr(), b"same");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        client.finish_copy(&t, 0, &mut a);
        client.finish_copy(&t, 1, &mut b);
        // The ciphertext and tag are the same bytes: one encryption serves every path.
        assert_eq!(a[4..a.len() - 8], b[4..b.len() - 8]);
        let mut s = Vec::new();
        for c in [&a, &b] {
            server.verify_path(c).unwrap();
            assert_eq!(server.open(c, &mut s).unwrap(), b"same");
        }
        // A bridge that rewrites the index: the MAC fails; the AEAD alone would not notice.
        let mut forged = a.clone();
        forged[PATH_OFFSET] = 1;
        assert_eq!(server.verify_path(&forged), Err(DecodeError::Auth));
        assert!(
            server.open(&forged, &mut s).is_ok(),
            "index is not in the AD"
        );
        // Nor does moving another copy's MAC onto it.
        let n = forged.len();
        forged[n - 8..].copy_from_slice(&b[n - 8..]);
        assert!(
            server.verify_path(&forged).is_ok(),
            "this is b's copy again"
        );
    }

    #[test]
    fn wrong_key_and_mode_mismatch() {
        let (a, _) = pair(1);
        let (_, b) = pair(2);
        let plain = Codec::new(None, Sender::Server);
        let mut out = Vec::new();
        a.encode(&mut out, &hdr(), b"x");
        let mut s = Vec::new();
        assert!(b.parse(&out).is_ok());
        assert_eq!(b.verify_path(&out), Err(DecodeError::Auth));
        assert_eq!(b.open(&out, &mut s), Err(DecodeError::Auth));
        assert_eq!(plain.parse(&out), Err(DecodeError::SealMismatch));
        Codec::new(None, Sender::Client).encode(&mut out, &hdr(), b"x");
        assert_eq!(a.parse(&out), Err(DecodeError::SealMismatch));
        assert!(plain.parse(&out).is_ok());
        assert_eq!(plain.open(&out, &mut s).unwrap(), b"x");
    }
}
