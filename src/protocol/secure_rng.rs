//! The endpoints' random values (epochs, session ids, validation tokens, challenge nonces):
//! the ChaCha20 keystream under a 32-byte seed that the driver takes from the OS CSPRNG
//! when the endpoint starts (failing to start if the OS has none). Nothing a peer sees
//! (an epoch on the wire) tells the next value. The simulator seeds it from a number, for
//! runs it can repeat.

use chacha20::cipher::{KeyIvInit, StreamCipher};
use chacha20::ChaCha20;
use zeroize::Zeroize;

/// A seed for [`SecureRng`]: 32 bytes, wiped when dropped.
#[derive(Clone, Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Seed([u8; 32]);

impl std::fmt::Debug for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Seed(..)")
    }
}

impl Seed {
    /// 32 bytes from the OS CSPRNG; an error (never a weaker fallback) if it has none.
    pub fn from_os() -> Result<Seed, String> {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).map_err(|e| format!("the OS has no randomness to give: {e}"))?;
        let s = Seed(b);
        b.zeroize();
        Ok(s)
    }

    /// A seed from a number: predictable, for tests and simulations only.
    pub fn from_u64(n: u64) -> Seed {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&n.to_le_bytes());
        b[8..16].copy_from_slice(b"mptunnel");
        Seed(b)
    }
}

/// A cryptographically secure generator: the ChaCha20 keystream.
pub struct SecureRng {
    cipher: ChaCha20,
}

impl std::fmt::Debug for SecureRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecureRng(..)")
    }
}

impl SecureRng {
    /// The generator for `seed`.
    pub fn new(seed: &Seed) -> SecureRng {
        SecureRng {
            cipher: ChaCha20::new(&seed.0.into(), &[0u8; 12].into()),
        }
    }

    fn fill(&mut self, out: &mut [u8]) {
        out.fill(0);
        self.cipher.apply_keystream(out);
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// Next non-zero 64 random bits (epochs and ids, where 0 is reserved).
    pub fn nonzero_u64(&mut self) -> u64 {
        loop {
            let v = self.next_u64();
            if v != 0 {
                return v;
            }
        }
    }

    /// Next 128 random bits (challenge nonces).
    pub fn next_u128(&mut self) -> u128 {
        let mut b = [0u8; 16];
        self.fill(&mut b);
        u128::from_le_bytes(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_runs_repeat_and_differ_by_seed() {
        let mut a = SecureRng::new(&Seed::from_u64(1));
        let mut b = SecureRng::new(&Seed::from_u64(1));
        let mut c = SecureRng::new(&Seed::from_u64(2));
        let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(a.next_u128(), c.next_u128());
        let mut os = SecureRng::new(&Seed::from_os().unwrap());
        assert_ne!(os.nonzero_u64(), 0);
    }
}
