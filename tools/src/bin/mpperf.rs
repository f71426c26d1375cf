//! mpperf: UDP echo service and load generator for measuring loss, duplication and latency.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};
use mptunnel_tools::perf::{echo, load, packet};
use mptunnel_tools::udp;

const DEFAULT_ECHO_PORT: u16 = 6666;
/// Bounds memory for the received-seq bit vector and RTT samples.
const MAX_COUNT: u64 = 100_000_000;

#[derive(Parser, Debug)]
#[command(
    name = "mpperf",
    version,
    about = "UDP echo service and load generator for measuring loss, duplication and latency",
    after_help = "Typical use: `mpperf echo 6666` on one side, \
        `mpperf load --target HOST:6666 --rate 1000` on the other (directly or through a tunnel)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,

    /// Log verbosity on stderr: off, error, warn, info, debug or trace
    #[arg(long, global = true, value_name = "LEVEL", default_value = "warn", value_parser = mptunnel_tools::parse_log_level)]
    log_level: log::LevelFilter,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Echo every datagram back to its sender unchanged, until SIGINT/SIGTERM
    Echo(EchoArgs),
    /// Send numbered, timestamped datagrams at a fixed rate and report what came back
    #[command(
        after_help = "Reports sent, received (unique), duplicates, corrupt (payload not as \
        sent), foreign (another run's replies), loss % = (sent - received) / sent, RTT \
        min/p50/p90/p99/max and throughput. Exit status 0 even with loss; 1 on socket errors; \
        2 on bad arguments."
    )]
    Load(LoadArgs),
}

#[derive(Args, Debug)]
struct EchoArgs {
    /// Address to listen on: PORT (all IPv4 interfaces) or HOST:PORT [default: 0.0.0.0:6666]
    #[arg(value_name = "ADDR", value_parser = udp::parse_listen, conflicts_with = "listen")]
    addr: Option<SocketAddr>,

    /// Same as the positional ADDR
    #[arg(long, short = 'l', value_name = "ADDR", value_parser = udp::parse_listen)]
    listen: Option<SocketAddr>,
}

#[derive(Args, Debug)]
struct LoadArgs {
    /// Echo service to send to: HOST:PORT (a name is resolved once, IPv4 preferred)
    #[arg(long, short = 't', value_name = "HOST:PORT", value_parser = udp::parse_target)]
    target: SocketAddr,

    /// Datagrams per second
    #[arg(long, short = 'r', value_name = "PPS", default_value = "1000", value_parser = parse_rate)]
    rate: f64,

    /// Datagram payload size in bytes (32-65507)
    #[arg(long, short = 's', value_name = "BYTES", default_value = "1200",
          value_parser = clap::value_parser!(u32).range(packet::MIN_SIZE as i64..=packet::MAX_SIZE as i64))]
    size: u32,

    /// How long to send, in seconds
    #[arg(long, short = 'd', value_name = "SECS", default_value = "5", value_parser = parse_duration)]
    duration: f64,

    /// Number of datagrams to send (overrides --duration)
    #[arg(long, short = 'n', value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=MAX_COUNT))]
    count: Option<u64>,

    /// Seconds to wait for late replies after the last send (the run ends early once all came back)
    #[arg(long, short = 'w', value_name = "SECS", default_value = "1", value_parser = parse_wait)]
    wait: f64,

    /// Local address to send from: PORT or HOST:PORT [default: any address, ephemeral port]
    #[arg(long, short = 'b', value_name = "ADDR", value_parser = udp::parse_listen)]
    bind: Option<SocketAddr>,

    /// Print one JSON object instead of the table
    #[arg(long)]
    json: bool,

    /// Free text copied into the report, to tell runs apart
    #[arg(long, value_name = "TEXT")]
    label: Option<String>,
}

fn parse_float(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|_| "not a number".to_string())?;
    if !v.is_finite() {
        return Err("must be a finite number".to_string());
    }
    Ok(v)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let v = parse_float(s)?;
    if !(0.001..=10_000_000.0).contains(&v) {
        return Err("must be between 0.001 and 10000000 datagrams per second".to_string());
    }
    Ok(v)
}

fn parse_duration(s: &str) -> Result<f64, String> {
    let v = parse_float(s)?;
    if !(v > 0.0 && v <= 1e6) {
        return Err("must be more than 0 and at most 1000000 seconds".to_string());
    }
    Ok(v)
}

fn parse_wait(s: &str) -> Result<f64, String> {
    let v = parse_float(s)?;
    if !(0.0..=3600.0).contains(&v) {
        return Err("must be between 0 and 3600 seconds".to_string());
    }
    Ok(v)
}

impl EchoArgs {
    fn listen(&self) -> SocketAddr {
        self.addr.or(self.listen).unwrap_or(SocketAddr::new(
            Ipv4Addr::UNSPECIFIED.into(),
            DEFAULT_ECHO_PORT,
        ))
    }
}

impl LoadArgs {
    /// Checks that need several arguments at once; the message is for a usage error.
    fn config(&self) -> Result<load::LoadConfig, String> {
        let count = match self.count {
            Some(n) => n,
            None => {
                let n = (self.rate * self.duration).ceil().max(1.0);
                if n > MAX_COUNT as f64 {
                    return Err(format!(
                        "--rate {} for --duration {} means {n} datagrams, more than {MAX_COUNT}",
                        self.rate, self.duration
                    ));
                }
                n as u64
            }
        };
        let bind = self
            .bind
            .unwrap_or_else(|| udp::any_addr_like(&self.target));
        if bind.is_ipv4() != self.target.is_ipv4() {
            return Err(format!(
                "--bind {bind} and --target {} are different address families",
                self.target
            ));
        }
        Ok(load::LoadConfig {
            target: self.target,
            bind,
            rate: self.rate,
            size: self.size as usize,
            count,
            wait: Duration::from_secs_f64(self.wait),
            label: self.label.clone(),
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mptunnel_tools::init_logger("mpperf", cli.log_level);
    let terminate = match mptunnel_tools::termination_flag() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("mpperf: error: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let result = match &cli.cmd {
        Cmd::Echo(args) => echo::run(args.listen(), &terminate),
        Cmd::Load(args) => {
            let cfg = match args.config() {
                Ok(c) => c,
                Err(msg) => Cli::command()
                    .error(ErrorKind::ArgumentConflict, msg)
                    .exit(),
            };
            load::run(&cfg, &terminate).and_then(|report| {
                let text = if args.json {
                    serde_json::to_string(&report).map_err(std::io::Error::other)? + "\n"
                } else {
                    report.table()
                };
                use std::io::Write;
                let mut out = std::io::stdout().lock();
                out.write_all(text.as_bytes())?;
                out.flush()
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mpperf: error: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("mpperf").chain(args.iter().copied()))
    }

    fn echo_listen(args: &[&str]) -> SocketAddr {
        match parse(args).unwrap().cmd {
            Cmd::Echo(a) => a.listen(),
            Cmd::Load(_) => panic!("expected echo"),
        }
    }

    fn load_config(args: &[&str]) -> Result<load::LoadConfig, String> {
        match parse(args).unwrap().cmd {
            Cmd::Load(a) => a.config(),
            Cmd::Echo(_) => panic!("expected load"),
        }
    }

    #[test]
    fn echo_addresses() {
        assert_eq!(echo_listen(&["echo"]), "0.0.0.0:6666".parse().unwrap());
        assert_eq!(
            echo_listen(&["echo", "7000"]),
            "0.0.0.0:7000".parse().unwrap()
        );
        assert_eq!(
            echo_listen(&["echo", "--listen", "[::1]:7001"]),
            "[::1]:7001".parse().unwrap()
        );
        assert!(parse(&["echo", "7000", "--listen", "7001"]).is_err());
        assert!(parse(&["echo", "nope"]).is_err());
    }

    #[test]
    fn load_defaults_and_count() {
        let cfg = load_config(&["load", "--target", "127.0.0.1:6666"]).unwrap();
        assert_eq!((cfg.rate, cfg.size, cfg.count), (1000.0, 1200, 5000));
        assert_eq!(cfg.wait, Duration::from_secs(1));
        assert_eq!(cfg.bind, "0.0.0.0:0".parse().unwrap());
        let cfg = load_config(&[
            "load",
            "-t",
            "127.0.0.1:1",
            "--rate",
            "10",
            "--duration",
            "0.01",
            "--log-level",
            "info",
        ])
        .unwrap();
        assert_eq!(cfg.count, 1);
        let cfg = load_config(&["load", "-t", "127.0.0.1:1", "-n", "7", "-d", "100"]).unwrap();
        assert_eq!(cfg.count, 7);
        assert!(load_config(&["load", "-t", "127.0.0.1:1", "-b", "[::1]:0"]).is_err());
        assert!(load_config(&["load", "-t", "127.0.0.1:1", "-r", "1e7", "-d", "1e3"]).is_err());
    }

    #[test]
    fn load_rejects_bad_values() {
        for args in [
            &["load"][..],
            &["load", "--target", "nohost"],
            &["load", "-t", "127.0.0.1:1", "--size", "10"],
            &["load", "-t", "127.0.0.1:1", "--size", "70000"],
            &["load", "-t", "127.0.0.1:1", "--rate", "0"],
            &["load", "-t", "127.0.0.1:1", "--duration", "-1"],
            &["load", "-t", "127.0.0.1:1", "--count", "0"],
            &["load", "-t", "127.0.0.1:1", "--wait", "x"],
        ] {
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
    }
}
