//! Keys and the packet codec for both modes: unsealed (CRC-32 trailer) and sealed
//! (XChaCha20-Poly1305 with the header as associated data). The construction and the reason
//! nonces never repeat are in docs/PROTOCOL.md.

use std::fmt;

use base64::Engine;
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use super::packet::{self, DecodeError, Header, FLAG_SEALED, HEADER_LEN, MAX_UDP_PAYLOAD, TAG_LEN};

/// A 32-byte pre-shared key.
#[derive(Clone, PartialEq, Eq)]
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
        Ok(Key(k))
    }

    /// The raw bytes.
    pub fn from_bytes(b: [u8; 32]) -> Key {
        Key(b)
    }

    /// Parses the 44-character base64 form (as WireGuard writes keys), naming what is wrong.
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
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("the key is not valid base64 ({e})"))?;
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("a key is 32 bytes, this one decodes to {}", b.len()))?;
        Ok(Key(arr))
    }

    /// The 44-character base64 form.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
}

/// Encodes and decodes packets in the endpoint's mode.
#[derive(Clone)]
pub struct Codec {
    cipher: Option<XChaCha20Poly1305>,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("sealed", &self.cipher.is_some())
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
    /// Sealed with `key`, or unsealed without one.
    pub fn new(key: Option<&Key>) -> Codec {
        Codec {
            cipher: key.map(|k| XChaCha20Poly1305::new(&k.0.into())),
        }
    }

    /// True in the sealed mode.
    pub fn sealed(&self) -> bool {
        self.cipher.is_some()
    }

    /// Bytes added to each payload.
    pub fn overhead(&self) -> usize {
        if self.sealed() {
            HEADER_LEN + TAG_LEN
        } else {
            packet::OVERHEAD
        }
    }

    /// Largest payload that fits one UDP datagram.
    pub fn max_payload(&self) -> usize {
        MAX_UDP_PAYLOAD - self.overhead()
    }

    /// Encodes a packet into `out` (replacing its contents): once per datagram, however many
    /// paths it then goes on.
    pub fn encode(&self, out: &mut Vec<u8>, header: &Header, payload: &[u8]) {
        let Some(cipher) = &self.cipher else {
            packet::encode(out, header, payload);
            return;
        };
        let mut h = *header;
        h.flags |= FLAG_SEALED;
        let mut hb = [0u8; HEADER_LEN];
        h.write(&mut hb);
        out.clear();
        out.reserve(HEADER_LEN + payload.len() + TAG_LEN);
        out.extend_from_slice(&hb);
        out.extend_from_slice(payload);
        // Encryption cannot fail for lengths under 256 GiB.
        match cipher.encrypt_in_place_detached(&nonce(&h), &hb, &mut out[HEADER_LEN..]) {
            Ok(tag) => out.extend_from_slice(&tag),
            Err(_) => out.clear(),
        }
    }

    /// Parses the header and checks that the packet's mode matches ours, without verifying
    /// the trailer: enough to consult the replay window before paying for decryption.
    pub fn parse(&self, bytes: &[u8]) -> Result<Header, DecodeError> {
        let h = Header::parse(bytes)?;
        let sealed = h.flags & FLAG_SEALED != 0;
        if sealed != self.sealed() {
            return Err(DecodeError::SealMismatch);
        }
        let min = if sealed {
            HEADER_LEN + TAG_LEN
        } else {
            packet::OVERHEAD
        };
        if bytes.len() < min {
            return Err(DecodeError::Truncated);
        }
        Ok(h)
    }

    /// Verifies (and decrypts) a packet whose header [`parse`](Self::parse) accepted.
    /// The payload is returned from `bytes` (unsealed) or decrypted into `scratch` (sealed).
    pub fn open<'a>(
        &self,
        bytes: &'a [u8],
        scratch: &'a mut Vec<u8>,
    ) -> Result<&'a [u8], DecodeError> {
        let Some(cipher) = &self.cipher else {
            return packet::decode(bytes).map(|(_, p)| p);
        };
        let h = Header::parse(bytes)?;
        if bytes.len() < HEADER_LEN + TAG_LEN {
            return Err(DecodeError::Truncated);
        }
        let body_end = bytes.len() - TAG_LEN;
        scratch.clear();
        scratch.extend_from_slice(&bytes[HEADER_LEN..body_end]);
        let tag = Tag::from_slice(&bytes[body_end..]);
        cipher
            .decrypt_in_place_detached(&nonce(&h), &bytes[..HEADER_LEN], scratch, tag)
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
            session: 7,
            epoch: 9,
            seq: 11,
        }
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
        assert!(Key::from_base64(&"!".repeat(44))
            .unwrap_err()
            .contains("not valid base64"));
        assert_eq!(format!("{k:?}"), "Key(..)");
    }

    #[test]
    fn sealed_round_trip_and_every_bit_flip_rejected() {
        let key = Key::from_bytes([3; 32]);
        let c = Codec::new(Some(&key));
        let mut out = Vec::new();
        c.encode(&mut out, &hdr(), b"secret payload");
        assert_eq!(out.len(), 28 + 14 + 16);
        assert!(
            !out.windows(6).any(|w| w == b"secret"),
            "payload is encrypted"
        );
        let mut scratch = Vec::new();
        assert_eq!(c.parse(&out).unwrap().seq, 11);
        assert_eq!(c.open(&out, &mut scratch).unwrap(), b"secret payload");
        for i in 0..out.len() {
            for bit in 0..8 {
                let mut b = out.clone();
                b[i] ^= 1 << bit;
                let ok = c.parse(&b).is_ok() && c.open(&b, &mut scratch).is_ok();
                assert!(!ok, "flip of byte {i} bit {bit} accepted");
            }
        }
    }

    #[test]
    fn wrong_key_and_mode_mismatch() {
        let a = Codec::new(Some(&Key::from_bytes([1; 32])));
        let b = Codec::new(Some(&Key::from_bytes([2; 32])));
        let plain = Codec::new(None);
        let mut out = Vec::new();
        a.encode(&mut out, &hdr(), b"x");
        let mut s = Vec::new();
        assert!(b.parse(&out).is_ok());
        assert_eq!(b.open(&out, &mut s), Err(DecodeError::Auth));
        assert_eq!(plain.parse(&out), Err(DecodeError::SealMismatch));
        plain.encode(&mut out, &hdr(), b"x");
        assert_eq!(a.parse(&out), Err(DecodeError::SealMismatch));
    }

    #[test]
    fn copies_are_byte_identical() {
        let c = Codec::new(Some(&Key::from_bytes([5; 32])));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        c.encode(&mut x, &hdr(), b"same");
        c.encode(&mut y, &hdr(), b"same");
        assert_eq!(
            x, y,
            "same header, same bytes: one encryption serves every path"
        );
    }
}
