//! The load generator: paced numbered datagrams, echo matching and the report.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use super::packet;
use crate::seed::entropy_seed;
use crate::udp::udp_socket;

/// Most datagrams sent back to back before receiving; bounds how far a late
/// wake-up bunches sends together.
const BURST: usize = 64;
/// Most datagrams read before the send schedule is looked at again.
const RECV_BATCH: usize = 4096;
/// Longest sleep, so SIGINT/SIGTERM are noticed even if they race with `poll`.
const MAX_SLEEP: Duration = Duration::from_millis(100);

pub struct LoadConfig {
    pub target: SocketAddr,
    pub bind: SocketAddr,
    pub rate: f64,
    pub size: usize,
    pub count: u64,
    pub wait: Duration,
    pub label: Option<String>,
}

/// Send times follow a fixed schedule from the run start, so pacing errors do not accumulate.
#[derive(Clone, Copy)]
struct Schedule {
    rate: f64,
}

impl Schedule {
    fn at_ns(self, seq: u64) -> u64 {
        (seq as f64 * 1e9 / self.rate) as u64
    }
}

#[derive(Default, Debug)]
struct Counters {
    sent: u64,
    received: u64,
    duplicates: u64,
    corrupt: u64,
    foreign: u64,
    send_errors: u64,
    recv_errors: u64,
}

struct Receiver {
    run_id: u64,
    count: u64,
    size: usize,
    schedule: Schedule,
    /// One bit per seq: set once its first echo arrived.
    seen: Vec<u64>,
    rtts_ns: Vec<u64>,
    last_reply_ns: u64,
    c: Counters,
}

impl Receiver {
    fn on_datagram(&mut self, data: &[u8], now_ns: u64) {
        let Some(h) = packet::parse_header(data) else {
            self.c.corrupt += 1;
            return;
        };
        if h.run_id != self.run_id {
            self.c.foreign += 1;
            return;
        }
        let plausible = h.seq < self.count
            && data.len() == self.size
            && h.sent_ns <= now_ns
            && h.sent_ns >= self.schedule.at_ns(h.seq)
            && packet::padding_ok(data, h.seq);
        if !plausible {
            self.c.corrupt += 1;
            return;
        }
        let word = (h.seq / 64) as usize;
        let bit = 1u64 << (h.seq % 64);
        let Some(w) = self.seen.get_mut(word) else {
            self.c.corrupt += 1;
            return;
        };
        if *w & bit != 0 {
            self.c.duplicates += 1;
            return;
        }
        *w |= bit;
        self.c.received += 1;
        self.rtts_ns.push(now_ns - h.sent_ns);
        self.last_reply_ns = now_ns;
    }
}

/// Sends `cfg.count` datagrams at `cfg.rate` and collects echoes until all came back
/// or `cfg.wait` passed after the last send (or `terminate` is set).
pub fn run(cfg: &LoadConfig, terminate: &AtomicBool) -> io::Result<Report> {
    let mut sock = udp_socket(cfg.bind)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot bind {}: {e}", cfg.bind)))?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut sock, Token(0), Interest::READABLE)?;
    let mut events = Events::with_capacity(16);
    let schedule = Schedule { rate: cfg.rate };
    let run_id = entropy_seed();
    let words = usize::try_from(cfg.count.div_ceil(64))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "count too large"))?;
    let mut rx = Receiver {
        run_id,
        count: cfg.count,
        size: cfg.size,
        schedule,
        seen: vec![0; words],
        rtts_ns: Vec::new(),
        last_reply_ns: 0,
        c: Counters::default(),
    };
    let mut tx_buf = vec![0u8; cfg.size];
    let mut rx_buf = vec![0u8; 65_536];
    let wait_ns = cfg.wait.as_nanos() as u64;
    log::info!(
        "sending {} datagrams of {} bytes at {} pps to {} (run id {run_id:016x})",
        cfg.count,
        cfg.size,
        cfg.rate,
        cfg.target
    );

    let start = Instant::now();
    let elapsed_ns = || start.elapsed().as_nanos() as u64;
    let mut next: u64 = 0;
    let mut last_send_ns: u64 = 0;
    let end_ns = loop {
        let mut blocked = false;
        for _ in 0..BURST {
            if next >= cfg.count {
                break;
            }
            let t = elapsed_ns();
            if t < schedule.at_ns(next) {
                break;
            }
            packet::fill(&mut tx_buf, run_id, next, t);
            match sock.send_to(&tx_buf, cfg.target) {
                Ok(_) => {
                    rx.c.sent += 1;
                    next += 1;
                    last_send_ns = t;
                }
                // Socket buffer full: retry the same datagram shortly.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // E.g. ECONNREFUSED while nothing listens yet: a measurement, not a failure.
                    rx.c.send_errors += 1;
                    next += 1;
                    last_send_ns = t;
                    log::debug!("send seq {}: {e}", next - 1);
                }
            }
        }

        for _ in 0..RECV_BATCH {
            match sock.recv_from(&mut rx_buf) {
                Ok((n, _)) => rx.on_datagram(&rx_buf[..n], elapsed_ns()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    rx.c.recv_errors += 1;
                    log::debug!("receive: {e}");
                    break;
                }
            }
        }

        let t = elapsed_ns();
        if crate::is_set(terminate) {
            log::info!("interrupted, reporting partial results");
            break t;
        }
        let sleep_ns = if next < cfg.count {
            if blocked {
                1_000_000
            } else {
                schedule.at_ns(next).saturating_sub(t)
            }
        } else {
            let deadline = last_send_ns.saturating_add(wait_ns);
            if rx.c.received >= rx.c.sent || t >= deadline {
                break t;
            }
            deadline - t
        };
        let sleep = Duration::from_nanos(sleep_ns).min(MAX_SLEEP);
        match poll.poll(&mut events, Some(sleep)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    };

    // The sending period covers the interval after the last datagram, so a full run at
    // R pps over D seconds reports D seconds and R pps.
    let interval_ns = (1e9 / cfg.rate) as u64;
    let active_ns = if rx.c.sent + rx.c.send_errors == 0 {
        end_ns
    } else {
        last_send_ns
            .saturating_add(interval_ns)
            .max(rx.last_reply_ns)
    };
    if rx.c.recv_errors > 0 {
        log::info!("{} receive errors", rx.c.recv_errors);
    }
    Ok(Report::new(cfg, &rx.c, rx.rtts_ns, active_ns))
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Rtt {
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Serialize, Debug)]
pub struct Report {
    pub label: Option<String>,
    pub target: String,
    pub sent: u64,
    pub received: u64,
    pub duplicates: u64,
    pub corrupt: u64,
    pub foreign: u64,
    pub send_errors: u64,
    pub loss_pct: f64,
    pub rtt_ms: Option<Rtt>,
    pub throughput_pps: f64,
    pub throughput_mbps: f64,
    pub duration_s: f64,
    pub rate_pps: f64,
    pub size: usize,
}

/// Nearest-rank percentile of sorted samples; `p` in 0..=100.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

fn rtt_summary(mut rtts_ns: Vec<u64>) -> Option<Rtt> {
    rtts_ns.sort_unstable();
    let ms = |p: f64| percentile(&rtts_ns, p).map(|ns| round3(ns as f64 / 1e6));
    Some(Rtt {
        min: ms(0.0)?,
        p50: ms(50.0)?,
        p90: ms(90.0)?,
        p99: ms(99.0)?,
        max: ms(100.0)?,
    })
}

impl Report {
    fn new(cfg: &LoadConfig, c: &Counters, rtts_ns: Vec<u64>, active_ns: u64) -> Report {
        let secs = active_ns as f64 / 1e9;
        let per_sec = |x: f64| if secs > 0.0 { x / secs } else { 0.0 };
        let loss_pct = if c.sent == 0 {
            100.0
        } else {
            c.sent.saturating_sub(c.received) as f64 * 100.0 / c.sent as f64
        };
        Report {
            label: cfg.label.clone(),
            target: cfg.target.to_string(),
            sent: c.sent,
            received: c.received,
            duplicates: c.duplicates,
            corrupt: c.corrupt,
            foreign: c.foreign,
            send_errors: c.send_errors,
            loss_pct: round3(loss_pct),
            rtt_ms: rtt_summary(rtts_ns),
            throughput_pps: round3(per_sec(c.received as f64)),
            throughput_mbps: round3(per_sec(c.received as f64 * cfg.size as f64 * 8.0) / 1e6),
            duration_s: round3(secs),
            rate_pps: cfg.rate,
            size: cfg.size,
        }
    }

    /// Human-readable, aligned lines.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, value: String| {
            let _ = writeln!(out, "{name:<12}{value}");
        };
        if let Some(label) = &self.label {
            line("label", label.clone());
        }
        line("target", self.target.clone());
        line(
            "sent",
            format!(
                "{} datagrams of {} bytes at {} pps ({} send errors)",
                self.sent, self.size, self.rate_pps, self.send_errors
            ),
        );
        line(
            "received",
            format!(
                "{} (duplicates {}, corrupt {}, foreign {})",
                self.received, self.duplicates, self.corrupt, self.foreign
            ),
        );
        line("loss", format!("{:.3} %", self.loss_pct));
        line(
            "rtt ms",
            match &self.rtt_ms {
                Some(r) => format!(
                    "min {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  max {:.3}",
                    r.min, r.p50, r.p90, r.p99, r.max
                ),
                None => "n/a (nothing received)".to_string(),
            },
        );
        line(
            "throughput",
            format!(
                "{:.1} datagrams/s, {:.3} Mbit/s",
                self.throughput_pps, self.throughput_mbps
            ),
        );
        line("duration", format!("{:.3} s", self.duration_s));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[7], 0.0), Some(7));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 90.0), Some(90));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 50.0), Some(5));
        assert_eq!(percentile(&v, 99.0), Some(10));
    }

    #[test]
    fn rtt_in_ms() {
        assert_eq!(rtt_summary(vec![]), None);
        let r = rtt_summary(vec![3_000_000, 1_000_000, 2_000_000]).unwrap();
        assert_eq!(
            r,
            Rtt {
                min: 1.0,
                p50: 2.0,
                p90: 3.0,
                p99: 3.0,
                max: 3.0
            }
        );
    }

    fn receiver(count: u64) -> Receiver {
        Receiver {
            run_id: 5,
            count,
            size: 64,
            schedule: Schedule { rate: 1000.0 },
            seen: vec![0; count.div_ceil(64) as usize],
            rtts_ns: Vec::new(),
            last_reply_ns: 0,
            c: Counters::default(),
        }
    }

    #[test]
    fn classifies_replies() {
        let mut rx = receiver(100);
        let mut buf = vec![0u8; 64];
        packet::fill(&mut buf, 5, 3, 3_000_000);
        rx.on_datagram(&buf, 4_000_000);
        rx.on_datagram(&buf, 4_500_000);
        assert_eq!((rx.c.received, rx.c.duplicates), (1, 1));
        assert_eq!(rx.rtts_ns, vec![1_000_000]);

        // Sent before its schedule slot: forged or corrupted timestamp.
        packet::fill(&mut buf, 5, 4, 1);
        rx.on_datagram(&buf, 5_000_000);
        // Out-of-range seq.
        packet::fill(&mut buf, 5, 100, 200_000_000);
        rx.on_datagram(&buf, 300_000_000);
        // Damaged padding.
        packet::fill(&mut buf, 5, 6, 6_000_000);
        buf[40] ^= 0xff;
        rx.on_datagram(&buf, 7_000_000);
        // Truncated.
        packet::fill(&mut buf, 5, 7, 7_000_000);
        rx.on_datagram(&buf[..60], 8_000_000);
        rx.on_datagram(b"hello", 8_000_000);
        assert_eq!(rx.c.corrupt, 5);

        packet::fill(&mut buf, 6, 8, 8_000_000);
        rx.on_datagram(&buf, 9_000_000);
        assert_eq!(rx.c.foreign, 1);
        assert_eq!(rx.c.received, 1);
    }

    #[test]
    fn report_math() {
        let cfg = LoadConfig {
            target: "127.0.0.1:9".parse().unwrap(),
            bind: "0.0.0.0:0".parse().unwrap(),
            rate: 1000.0,
            size: 1250,
            count: 1000,
            wait: Duration::from_secs(1),
            label: Some("x".into()),
        };
        let c = Counters {
            sent: 1000,
            received: 900,
            ..Counters::default()
        };
        let r = Report::new(&cfg, &c, vec![1_000_000; 900], 1_000_000_000);
        assert_eq!(r.loss_pct, 10.0);
        assert_eq!(r.throughput_pps, 900.0);
        assert_eq!(r.throughput_mbps, 9.0);
        assert_eq!(r.duration_s, 1.0);
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "label",
            "target",
            "sent",
            "received",
            "duplicates",
            "corrupt",
            "loss_pct",
            "rtt_ms",
            "throughput_pps",
            "throughput_mbps",
            "duration_s",
            "rate_pps",
            "size",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert!(r.table().contains("loss        10.000 %"));

        let none = Report::new(&cfg, &Counters::default(), vec![], 0);
        assert_eq!(none.loss_pct, 100.0);
        assert!(serde_json::to_value(&none).unwrap()["rtt_ms"].is_null());
    }
}
