//! mpbridge: a UDP relay for a bridge host, with optional impairments for testing.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use mptunnel_tools::bridge::impair::{Impairment, Rate};
use mptunnel_tools::bridge::relay;
use mptunnel_tools::{seed, udp};

/// One hour: longer delays are almost certainly a unit mistake.
const MAX_DELAY_MS: f64 = 3_600_000.0;

#[derive(Parser, Debug)]
#[command(
    name = "mpbridge",
    version,
    about = "UDP relay for a bridge host, with optional impairments for testing",
    long_about = "UDP relay for a bridge host, with optional impairments for testing.\n\n\
        Datagrams from each client address arriving on LISTEN are forwarded to UPSTREAM \
        from an upstream socket dedicated to that client (like a NAT); replies arriving on \
        that socket are sent back to the client from LISTEN. Mappings expire after \
        --idle-timeout. Errors reaching UPSTREAM are counted and never fatal.",
    after_help = "Impairments apply independently to each datagram and direction: \"up\" is \
        client to UPSTREAM, \"down\" is UPSTREAM to client. --loss, --delay, --jitter, \
        --duplicate, --reorder and --rate set both directions; the -up/-down variants override one.\n\n\
        Signals: SIGUSR1 drops everything in both directions (blackhole) until SIGUSR2; \
        SIGINT/SIGTERM exit cleanly."
)]
struct Cli {
    /// Where clients send to: PORT (all IPv4 interfaces) or HOST:PORT, IPv6 in brackets ([::1]:4001)
    #[arg(value_name = "LISTEN", value_parser = udp::parse_listen)]
    listen: SocketAddr,

    /// Where datagrams are relayed to: HOST:PORT; a name is resolved once at start, IPv4 preferred
    #[arg(value_name = "UPSTREAM", value_parser = udp::parse_target)]
    upstream: SocketAddr,

    /// Percent of datagrams dropped (0-100, fractions allowed)
    #[arg(long, value_name = "PCT", default_value = "0", value_parser = parse_pct)]
    loss: f64,
    /// Loss for client-to-upstream datagrams only (overrides --loss)
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    loss_up: Option<f64>,
    /// Loss for upstream-to-client datagrams only (overrides --loss)
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    loss_down: Option<f64>,

    /// Added one-way delay in milliseconds (fractions allowed)
    #[arg(long, value_name = "MS", default_value = "0", value_parser = parse_ms)]
    delay: f64,
    /// Delay for client-to-upstream datagrams only (overrides --delay)
    #[arg(long, value_name = "MS", value_parser = parse_ms)]
    delay_up: Option<f64>,
    /// Delay for upstream-to-client datagrams only (overrides --delay)
    #[arg(long, value_name = "MS", value_parser = parse_ms)]
    delay_down: Option<f64>,

    /// Extra delay drawn uniformly from 0..MS milliseconds for each datagram
    #[arg(long, value_name = "MS", default_value = "0", value_parser = parse_ms)]
    jitter: f64,
    /// Jitter for client-to-upstream datagrams only (overrides --jitter)
    #[arg(long, value_name = "MS", value_parser = parse_ms)]
    jitter_up: Option<f64>,
    /// Jitter for upstream-to-client datagrams only (overrides --jitter)
    #[arg(long, value_name = "MS", value_parser = parse_ms)]
    jitter_down: Option<f64>,

    /// Percent of datagrams sent twice (each copy gets its own delay)
    #[arg(long, value_name = "PCT", default_value = "0", value_parser = parse_pct)]
    duplicate: f64,
    /// Duplication for client-to-upstream datagrams only (overrides --duplicate)
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    duplicate_up: Option<f64>,
    /// Duplication for upstream-to-client datagrams only (overrides --duplicate)
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    duplicate_down: Option<f64>,

    /// Percent of datagrams held back by --reorder-extra so later ones overtake them
    #[arg(long, value_name = "PCT", default_value = "0", value_parser = parse_pct)]
    reorder: f64,
    /// Reordering for client-to-upstream datagrams only (overrides --reorder)
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    reorder_up: Option<f64>,
    /// Reordering for upstream-to-client datagrams only (overrides --reorder)
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    reorder_down: Option<f64>,
    /// How long reordered datagrams are held back, in milliseconds
    /// [default: delay + 2 x jitter of that direction, at least 5]
    #[arg(long, value_name = "MS", value_parser = parse_ms)]
    reorder_extra: Option<f64>,

    /// Capacity of the link, each direction: datagrams over it are dropped, like on a
    /// congested link (a token bucket holding 20 ms). RATE is 500pps (datagrams/s), 250kB/s,
    /// 2MB/s, 800kbit/s or 10Mbit/s
    #[arg(long, value_name = "RATE", value_parser = Rate::parse)]
    rate: Option<Rate>,
    /// Capacity client to UPSTREAM only (overrides --rate)
    #[arg(long, value_name = "RATE", value_parser = Rate::parse)]
    rate_up: Option<Rate>,
    /// Capacity UPSTREAM to client only (overrides --rate)
    #[arg(long, value_name = "RATE", value_parser = Rate::parse)]
    rate_down: Option<Rate>,

    /// Test a tunnel against a hostile bridge: also send every datagram from UPSTREAM back to
    /// UPSTREAM (as if the client had sent it), besides forwarding it to the client
    #[arg(long)]
    reflect: bool,

    /// Seed for the impairment random generator, for reproducible runs [default: time and pid]
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Seconds without traffic after which a client mapping and its upstream socket are removed
    #[arg(long, value_name = "SECS", default_value = "120", value_parser = parse_positive_secs)]
    idle_timeout: f64,

    /// Most client mappings kept at once; the least recently active one is evicted beyond that
    #[arg(long, value_name = "N", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_clients: u32,

    /// Report the counters every SECS seconds (0 = never): a log line at --log-level info, or a
    /// JSON line with --stats-json
    #[arg(long, value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    stats_interval: f64,

    /// Print each report (every --stats-interval, and a last one at exit) as one JSON line on
    /// stdout: {"listen", "upstream", "clients", "queued", "blackhole", "up": {...}, "down":
    /// {...}, "clients_new", ...}, each direction with rx, tx, lost, duplicated, reordered, ...
    #[arg(long)]
    stats_json: bool,

    /// Log verbosity on stderr: off, error, warn, info, debug or trace (info and above also print a final summary)
    #[arg(long, value_name = "LEVEL", default_value = "warn", value_parser = mptunnel_tools::parse_log_level)]
    log_level: log::LevelFilter,
}

fn parse_float(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| "not a number".to_string())?;
    if !v.is_finite() {
        return Err("must be a finite number".to_string());
    }
    Ok(v)
}

fn parse_pct(s: &str) -> Result<f64, String> {
    let v = parse_float(s)?;
    if !(0.0..=100.0).contains(&v) {
        return Err("must be a percentage between 0 and 100".to_string());
    }
    Ok(v)
}

fn parse_ms(s: &str) -> Result<f64, String> {
    let v = parse_float(s)?;
    if !(0.0..=MAX_DELAY_MS).contains(&v) {
        return Err(format!("must be between 0 and {MAX_DELAY_MS} milliseconds"));
    }
    Ok(v)
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let v = parse_float(s)?;
    if !(0.0..=1e6).contains(&v) {
        return Err("must be between 0 and 1000000 seconds".to_string());
    }
    Ok(v)
}

fn parse_positive_secs(s: &str) -> Result<f64, String> {
    let v = parse_secs(s)?;
    if v < 0.001 {
        return Err("must be at least 0.001 seconds".to_string());
    }
    Ok(v)
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v / 1e3)
}

impl Cli {
    fn impairment(&self, up: bool) -> Impairment {
        let pick = |base: f64, up_v: Option<f64>, down_v: Option<f64>| {
            if up { up_v } else { down_v }.unwrap_or(base)
        };
        let delay = ms(pick(self.delay, self.delay_up, self.delay_down));
        let jitter = ms(pick(self.jitter, self.jitter_up, self.jitter_down));
        Impairment {
            loss: pick(self.loss, self.loss_up, self.loss_down),
            delay,
            jitter,
            duplicate: pick(self.duplicate, self.duplicate_up, self.duplicate_down),
            reorder: pick(self.reorder, self.reorder_up, self.reorder_down),
            reorder_extra: self
                .reorder_extra
                .map(ms)
                .unwrap_or_else(|| Impairment::default_reorder_extra(delay, jitter)),
        }
    }

    fn config(&self) -> relay::Config {
        relay::Config {
            listen: self.listen,
            upstream: self.upstream,
            up: self.impairment(true),
            down: self.impairment(false),
            seed: self.seed.unwrap_or_else(seed::entropy_seed),
            idle_timeout: Duration::from_secs_f64(self.idle_timeout),
            max_clients: self.max_clients as usize,
            stats_interval: (self.stats_interval > 0.0)
                .then(|| Duration::from_secs_f64(self.stats_interval)),
            stats_json: self.stats_json,
            reflect: self.reflect,
            rate_up: self.rate_up.or(self.rate),
            rate_down: self.rate_down.or(self.rate),
        }
    }
}

fn signal_flags() -> std::io::Result<relay::Flags> {
    let terminate = mptunnel_tools::termination_flag()?;
    let blackhole = Arc::new(AtomicUsize::new(0));
    // Run-time blackholing needs SIGUSR1/SIGUSR2, which Windows does not have.
    #[cfg(unix)]
    {
        signal_hook::flag::register_usize(signal_hook::consts::SIGUSR1, Arc::clone(&blackhole), 1)?;
        signal_hook::flag::register_usize(signal_hook::consts::SIGUSR2, Arc::clone(&blackhole), 0)?;
    }
    Ok(relay::Flags {
        terminate,
        blackhole,
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mptunnel_tools::init_logger("mpbridge", cli.log_level);
    let flags = match signal_flags() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mpbridge: error: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    match relay::run(cli.config(), &flags) {
        Ok(report) => {
            log::info!("final: {}", report.text);
            if cli.stats_json {
                mptunnel_tools::print_json_line(&report.json);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mpbridge: error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("mpbridge").chain(args.iter().copied()))
    }

    #[test]
    fn defaults() {
        let cli = parse(&["4000", "127.0.0.1:5000"]).unwrap();
        assert_eq!(cli.listen, "0.0.0.0:4000".parse().unwrap());
        let cfg = cli.config();
        assert!(cfg.up.is_none() && cfg.down.is_none());
        assert_eq!(cfg.idle_timeout, Duration::from_secs(120));
        assert_eq!(cfg.max_clients, 1024);
        assert_eq!(cfg.stats_interval, None);
        assert_eq!(cli.log_level, log::LevelFilter::Warn);
    }

    #[test]
    fn per_direction_overrides() {
        let cli = parse(&[
            "[::1]:4001",
            "127.0.0.1:5000",
            "--loss",
            "10",
            "--loss-down",
            "2.5",
            "--delay",
            "20",
            "--jitter-up",
            "4",
            "--reorder",
            "1",
            "--seed",
            "9",
        ])
        .unwrap();
        let cfg = cli.config();
        assert_eq!(cfg.seed, 9);
        assert_eq!(cfg.up.loss, 10.0);
        assert_eq!(cfg.down.loss, 2.5);
        assert_eq!(cfg.up.delay, Duration::from_millis(20));
        assert_eq!(cfg.down.delay, Duration::from_millis(20));
        assert_eq!(cfg.up.jitter, Duration::from_millis(4));
        assert_eq!(cfg.down.jitter, Duration::ZERO);
        assert_eq!(cfg.up.reorder_extra, Duration::from_millis(28));
        assert_eq!(cfg.down.reorder_extra, Duration::from_millis(20));
    }

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["--loss", "150", "4000", "127.0.0.1:1"][..],
            &["--loss", "-1", "4000", "127.0.0.1:1"],
            &["--delay", "abc", "4000", "127.0.0.1:1"],
            &["--jitter", "NaN", "4000", "127.0.0.1:1"],
            &["--idle-timeout", "0", "4000", "127.0.0.1:1"],
            &["--max-clients", "0", "4000", "127.0.0.1:1"],
            &["notaport", "127.0.0.1:1"],
            &["4000", "x"],
            &["4000"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
