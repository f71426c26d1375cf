//! Per-datagram impairment decisions (loss, delay, jitter, duplication, reordering).

use std::time::{Duration, Instant};

/// The core's seeded xoshiro256**, plus the helpers impairments need; seeded runs repeat.
pub struct Rng(mptunnel::protocol::rng::Rng);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(mptunnel::protocol::rng::Rng::new(seed))
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        self.0.unit_f64()
    }

    /// True with probability `pct` percent; draws nothing when `pct` is 0 so
    /// enabling one impairment does not change the sequence another one sees.
    pub fn chance(&mut self, pct: f64) -> bool {
        pct > 0.0 && self.next_f64() * 100.0 < pct
    }
}

/// Impairments for one direction.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Impairment {
    /// Percent of datagrams dropped.
    pub loss: f64,
    pub delay: Duration,
    /// Upper bound of the uniform extra delay.
    pub jitter: Duration,
    /// Percent of datagrams sent twice.
    pub duplicate: f64,
    /// Percent of datagrams held back by `reorder_extra`.
    pub reorder: f64,
    pub reorder_extra: Duration,
}

/// What to do with one datagram: send `copies` copies, each after its delay.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decision {
    pub copies: usize,
    pub delays: [Duration; 2],
    pub reordered: bool,
}

impl Decision {
    pub fn delays(&self) -> &[Duration] {
        &self.delays[..self.copies]
    }
}

impl Impairment {
    /// Default hold-back for reordered datagrams: long enough to land behind
    /// datagrams sent a little later, even with jitter.
    pub fn default_reorder_extra(delay: Duration, jitter: Duration) -> Duration {
        (delay + jitter * 2).max(Duration::from_millis(5))
    }

    pub fn is_none(&self) -> bool {
        self.loss == 0.0
            && self.duplicate == 0.0
            && self.reorder == 0.0
            && self.delay.is_zero()
            && self.jitter.is_zero()
    }

    pub fn decide(&self, rng: &mut Rng) -> Decision {
        let mut d = Decision {
            copies: 0,
            delays: [Duration::ZERO; 2],
            reordered: false,
        };
        if rng.chance(self.loss) {
            return d;
        }
        d.copies = if rng.chance(self.duplicate) { 2 } else { 1 };
        for i in 0..d.copies {
            let mut delay = self.delay;
            if !self.jitter.is_zero() {
                delay += self.jitter.mul_f64(rng.next_f64());
            }
            if rng.chance(self.reorder) {
                delay += self.reorder_extra;
                d.reordered = true;
            }
            d.delays[i] = delay;
        }
        d
    }

    pub fn describe(&self) -> String {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        format!(
            "loss {}%, delay {} ms, jitter {} ms, duplicate {}%, reorder {}% (+{} ms)",
            self.loss,
            ms(self.delay),
            ms(self.jitter),
            self.duplicate,
            self.reorder,
            ms(self.reorder_extra)
        )
    }
}

/// A link's capacity: datagrams or bytes per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    Datagrams(f64),
    Bytes(f64),
}

impl Rate {
    /// Parses `500pps` (datagrams/s), `250kB/s`, `2MB/s`, `800kbit/s`, `10Mbit/s`
    /// (k and M are 1,000 and 1,000,000).
    pub fn parse(s: &str) -> Result<Rate, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let v: f64 = num.parse().map_err(|_| {
            format!("'{s}' is not a rate (expected e.g. 500pps, 250kB/s or 10Mbit/s)")
        })?;
        let r = match unit.trim() {
            "pps" | "dps" | "/s" => Rate::Datagrams(v),
            "B/s" => Rate::Bytes(v),
            "kB/s" => Rate::Bytes(v * 1e3),
            "MB/s" => Rate::Bytes(v * 1e6),
            "bit/s" => Rate::Bytes(v / 8.0),
            "kbit/s" => Rate::Bytes(v * 1e3 / 8.0),
            "Mbit/s" => Rate::Bytes(v * 1e6 / 8.0),
            "" => {
                return Err(format!(
                    "rate '{s}' needs a unit: pps (datagrams/s), B/s, kB/s, MB/s, kbit/s or Mbit/s"
                ))
            }
            u => {
                return Err(format!(
                    "unknown rate unit '{u}' in '{s}' (pps, B/s, kB/s, MB/s, kbit/s, Mbit/s)"
                ))
            }
        };
        let v = match r {
            Rate::Datagrams(v) | Rate::Bytes(v) => v,
        };
        if !(v.is_finite() && v > 0.0 && v <= 1e12) {
            return Err(format!("rate '{s}' must be above 0"));
        }
        Ok(r)
    }

    pub fn describe(&self) -> String {
        match self {
            Rate::Datagrams(v) => format!("{v} datagrams/s"),
            Rate::Bytes(v) => format!("{v} bytes/s"),
        }
    }
}

/// A token bucket for one direction: holds 20 ms of the rate (at least one datagram of
/// 64 KiB, or one datagram); a datagram over the rate is dropped, like on a congested link.
#[derive(Clone, Debug)]
pub struct Bucket {
    rate: Rate,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: Rate, now: Instant) -> Bucket {
        let mut b = Bucket {
            rate,
            tokens: 0.0,
            last: now,
        };
        b.tokens = b.depth();
        b
    }

    fn depth(&self) -> f64 {
        match self.rate {
            Rate::Datagrams(v) => (v * 0.02).max(1.0),
            Rate::Bytes(v) => (v * 0.02).max(65_536.0),
        }
    }

    /// True when a datagram of `len` bytes fits now (and takes its tokens).
    pub fn admit(&mut self, len: usize, now: Instant) -> bool {
        let per_s = match self.rate {
            Rate::Datagrams(v) | Rate::Bytes(v) => v,
        };
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + per_s * dt).min(self.depth());
        let cost = match self.rate {
            Rate::Datagrams(_) => 1.0,
            Rate::Bytes(_) => len as f64,
        };
        if self.tokens >= cost {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_and_limit() {
        assert_eq!(Rate::parse("500pps"), Ok(Rate::Datagrams(500.0)));
        assert_eq!(Rate::parse("2MB/s"), Ok(Rate::Bytes(2e6)));
        assert_eq!(Rate::parse("8kbit/s"), Ok(Rate::Bytes(1000.0)));
        assert!(Rate::parse("500").unwrap_err().contains("needs a unit"));
        assert!(Rate::parse("5 furlongs").unwrap_err().contains("furlongs"));
        assert!(Rate::parse("0pps").is_err());
        let t0 = Instant::now();
        let mut b = Bucket::new(Rate::Datagrams(1000.0), t0);
        // 20 ms of burst, then 1,000 per second.
        let burst = (0..100).filter(|_| b.admit(100, t0)).count();
        assert_eq!(burst, 20);
        let mut ok = 0;
        for i in 1..=10_000u64 {
            if b.admit(100, t0 + Duration::from_micros(100 * i)) {
                ok += 1;
            }
        }
        assert!((995..=1001).contains(&ok), "{ok} in 1 s");
    }

    #[test]
    fn xoshiro_is_deterministic_and_uniform() {
        let mut a = Rng::new(1);
        let mut b = Rng::new(1);
        let mut buckets = [0u32; 10];
        let n = 100_000;
        for _ in 0..n {
            let x = a.next_f64();
            assert_eq!(x.to_bits(), b.next_f64().to_bits());
            assert!((0.0..1.0).contains(&x));
            buckets[(x * 10.0) as usize] += 1;
        }
        for c in buckets {
            // Expected 10,000 per bucket; 5 sigma is about 475.
            assert!((9_500..10_500).contains(&c), "bucket count {c}");
        }
        assert_ne!(Rng::new(2).next_f64(), Rng::new(1).next_f64());
    }

    #[test]
    fn chance_matches_percentage() {
        let mut rng = Rng::new(7);
        let n = 100_000;
        let hits = (0..n).filter(|_| rng.chance(30.0)).count();
        assert!((29_000..31_000).contains(&hits), "hits {hits}");
        assert!(!(0..1000).any(|_| rng.chance(0.0)));
        assert!((0..1000).all(|_| rng.chance(100.0)));
    }

    #[test]
    fn decisions() {
        let mut rng = Rng::new(3);
        let none = Impairment::default();
        assert!(none.is_none());
        let d = none.decide(&mut rng);
        assert_eq!(d.delays(), &[Duration::ZERO]);

        let imp = Impairment {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(4),
            duplicate: 100.0,
            ..Impairment::default()
        };
        for _ in 0..1000 {
            let d = imp.decide(&mut rng);
            assert_eq!(d.copies, 2);
            for &x in d.delays() {
                assert!(x >= Duration::from_millis(10) && x < Duration::from_millis(14));
            }
        }

        let lossy = Impairment {
            loss: 100.0,
            ..Impairment::default()
        };
        assert_eq!(lossy.decide(&mut rng).copies, 0);

        let reorder = Impairment {
            reorder: 100.0,
            reorder_extra: Impairment::default_reorder_extra(Duration::ZERO, Duration::ZERO),
            ..Impairment::default()
        };
        let d = reorder.decide(&mut rng);
        assert!(d.reordered);
        assert_eq!(d.delays(), &[Duration::from_millis(5)]);
    }
}
