//! Per-datagram impairment decisions (loss, delay, jitter, duplication, reordering).

use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
