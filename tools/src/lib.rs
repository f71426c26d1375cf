//! Helpers shared by the command-line tools: logging to stderr and signal flags.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

struct StderrLogger {
    level: log::LevelFilter,
    prog: &'static str,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warn",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        let _ = writeln!(
            std::io::stderr().lock(),
            "{}: {}: {}",
            self.prog,
            level,
            record.args()
        );
    }

    fn flush(&self) {}
}

pub use mptunnel::config::parse_log_level;

/// Sends `log` records to stderr as `prog: level: message`. Call once, early in `main`.
pub fn init_logger(prog: &'static str, level: log::LevelFilter) {
    let logger = Box::new(StderrLogger { level, prog });
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

/// Registers SIGINT and SIGTERM; the returned flag turns true when either arrives.
pub fn termination_flag() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&flag))?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&flag))?;
    Ok(flag)
}

/// True once the flag from [`termination_flag`] is set.
pub fn is_set(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}

/// Exit code for bad arguments or configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit code for runtime failures (cannot bind, poll failure).
pub const EXIT_FAILURE: u8 = 1;

/// Applies `MPTUNNEL_KEY` (over a config file's key; `--key-file` overrides it).
pub fn apply_key_env(c: &mut mptunnel::Config) -> Result<(), String> {
    if let Ok(v) = std::env::var("MPTUNNEL_KEY") {
        if !v.trim().is_empty() {
            c.set("key", &v)
                .map_err(|e| format!("MPTUNNEL_KEY: {}", e.message))?;
        }
    }
    Ok(())
}

/// After all options are applied: the original tool's switch `MPTUNNEL_ENCRYPT=1` (also
/// spelled `MPTUNNELENCRYPT`) without a key is an error that says how to make one.
pub fn check_encrypt_switch(prog: &str, c: &mptunnel::Config) -> Result<(), String> {
    for var in ["MPTUNNEL_ENCRYPT", "MPTUNNELENCRYPT"] {
        if let Ok(v) = std::env::var(var) {
            let v = v.trim();
            if !v.is_empty() && v != "0" && c.params.key.is_none() {
                return Err(format!(
                    "{var}={v} asks for encryption, but no key is set. Make one with\n  \
                     {prog} genkey > mptunnel.key && chmod 600 mptunnel.key\n\
                     copy it to the other end, and start both ends with --key-file mptunnel.key \
                     (or MPTUNNEL_KEY=<key>)"
                ));
            }
        }
    }
    Ok(())
}

/// Handles `PROG genkey`: prints a new key. Returns true if it did.
pub fn maybe_genkey() -> Option<std::process::ExitCode> {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() != Some("genkey") {
        return None;
    }
    if let Some(extra) = args.next() {
        eprintln!("genkey takes no arguments (got '{extra}')");
        return Some(std::process::ExitCode::from(EXIT_USAGE));
    }
    match mptunnel::protocol::crypto::Key::generate() {
        Ok(k) => {
            println!("{}", k.to_base64());
            Some(std::process::ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("cannot generate a key: {e}");
            Some(std::process::ExitCode::from(EXIT_FAILURE))
        }
    }
}

/// How the tools print their stats reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatsFormat {
    /// The human summary, on stderr.
    #[default]
    Text,
    /// One JSON document per line, on stdout (`--stats-json`).
    Json,
}

/// Prints one stats report in `format`.
pub fn print_stats(format: StatsFormat, stats: &mptunnel::Stats) {
    match format {
        StatsFormat::Text => eprintln!("{}", stats.to_text()),
        StatsFormat::Json => print_json_line(&stats.to_json()),
    }
}

/// Writes `line` and a newline to stdout at once, flushed (stdout may be a pipe).
pub fn print_json_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// How often the tools' main thread looks at the termination flag while it waits.
const SIGNAL_CHECK: std::time::Duration = std::time::Duration::from_millis(50);

/// Runs a configured tunnel until SIGINT/SIGTERM, printing errors the way the tools do and a
/// stats report every `stats-interval` (and a last one at exit: at log level info as text,
/// always in JSON).
pub fn run_tunnel(
    prog: &'static str,
    config: &mptunnel::Config,
    format: StatsFormat,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    use std::time::Instant;
    let tunnel = match mptunnel::Tunnel::new(config) {
        Ok(t) => t,
        Err(mptunnel::Error::Config(e)) => {
            eprintln!("{prog}: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(e) => {
            eprintln!("{prog}: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // Installed before the loop thread starts; that thread blocks every signal, so they are
    // handled here.
    let flag = termination_flag().unwrap_or_else(|e| {
        log::warn!("cannot install signal handlers: {e}");
        Arc::new(AtomicBool::new(false))
    });
    let (handle, join) = match tunnel.spawn() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("{prog}: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let every = config.stats_interval;
    let mut next_report = every.map(|e| Instant::now() + e);
    while handle.is_running() {
        if is_set(&flag) {
            log::info!("signal received: shutting down");
            handle.stop();
            break;
        }
        let now = Instant::now();
        if let (Some(at), Some(every)) = (next_report, every) {
            if now >= at {
                print_stats(format, &handle.stats());
                next_report = Some(at.max(now - every) + every);
            }
        }
        let nap = next_report.map_or(SIGNAL_CHECK, |at| {
            at.saturating_duration_since(now).min(SIGNAL_CHECK)
        });
        std::thread::sleep(nap);
    }
    let result = join.join().unwrap_or_else(|_| {
        Err(mptunnel::Error::Io(
            "the tunnel loop panicked".into(),
            std::io::Error::other("panic"),
        ))
    });
    let last = handle.stats();
    match format {
        StatsFormat::Text => log::info!("{}", last.to_text()),
        StatsFormat::Json => print_stats(format, &last),
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{prog}: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Options common to mpclient and mpserver, applied after the config file so they win.
#[derive(clap::Args, Debug, Default)]
pub struct CommonOpts {
    /// Print a stats summary to stderr every SECS seconds (0 = never).
    #[arg(long, value_name = "SECS")]
    pub stats_interval: Option<String>,
    /// Print each stats report as one JSON line on stdout (the document of docs/STATS.md),
    /// and a last one at exit, instead of the text summary on stderr.
    #[arg(long)]
    pub stats_json: bool,
    /// Log level: error, warn (default), info, debug, trace or off.
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Probe each path every MS milliseconds (default 250).
    #[arg(long, value_name = "MS")]
    pub probe_interval: Option<String>,
    /// A path silent for MS milliseconds is down (default 1000).
    #[arg(long, value_name = "MS")]
    pub down_after: Option<String>,
    /// Drop sessions idle for SECS seconds (default 120).
    #[arg(long, value_name = "SECS")]
    pub idle_timeout: Option<String>,
    /// Most sessions held at once (default 1024).
    #[arg(long, value_name = "N")]
    pub max_sessions: Option<String>,
    /// Replay/duplicate window in packets, a multiple of 64 (default 8192).
    #[arg(long, value_name = "PACKETS")]
    pub window: Option<String>,
    /// Encrypt and authenticate with the pre-shared key in FILE (44 base64 characters, as
    /// printed by `genkey`); the same key on both ends. MPTUNNEL_KEY=<key> works too.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<String>,
}

impl CommonOpts {
    /// The report format these options ask for.
    pub fn stats_format(&self) -> StatsFormat {
        if self.stats_json {
            StatsFormat::Json
        } else {
            StatsFormat::Text
        }
    }

    /// Applies the options that were given.
    pub fn apply(&self, c: &mut mptunnel::Config) -> Result<(), mptunnel::ConfigError> {
        let pairs = [
            ("stats-interval", &self.stats_interval),
            ("log-level", &self.log_level),
            ("probe-interval", &self.probe_interval),
            ("down-after", &self.down_after),
            ("idle-timeout", &self.idle_timeout),
            ("max-sessions", &self.max_sessions),
            ("window", &self.window),
            ("key-file", &self.key_file),
        ];
        for (k, v) in pairs {
            if let Some(v) = v {
                c.set(k, v).map_err(|e| mptunnel::ConfigError {
                    location: String::new(),
                    message: format!("--{k}: {}", e.message),
                })?;
            }
        }
        Ok(())
    }
}

/// Starts logging at the configured level (default warn: quiet).
pub fn init_logging_from(prog: &'static str, c: &mptunnel::Config) {
    let level = c.log_level.unwrap_or(log::LevelFilter::Warn);
    init_logger(prog, level);
    for w in &c.warnings {
        log::warn!("{w}");
    }
}
