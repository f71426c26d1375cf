//! The command-line tools' library: logging to stderr, signal flags, running a tunnel with
//! its stats reports, the long options built from the core's option table, and the parts of
//! mpbridge and mpperf.

pub mod bridge;
pub mod options;
pub mod perf;
pub mod seed;
pub mod udp;

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

/// Builds the configuration from a command line (see `mptunnel::cli`); on error prints it
/// the way the tools do and gives the exit code.
pub fn config_from(
    prog: &'static str,
    role: mptunnel::Role,
    positionals: Vec<String>,
    options: Vec<(String, String)>,
) -> Result<mptunnel::Config, std::process::ExitCode> {
    let cl = mptunnel::cli::CommandLine {
        positionals,
        options,
    };
    mptunnel::cli::build(prog, role, &cl, &mptunnel::cli::process_env).map_err(|e| {
        eprintln!("{prog}: {e}\nTry '{prog} --help' for more information.");
        std::process::ExitCode::from(EXIT_USAGE)
    })
}

/// Builds the configuration again from the same command line (SIGHUP: the config file may
/// have changed); the error names what is wrong (with `file:line` for the file).
pub fn reread_config(
    prog: &'static str,
    role: mptunnel::Role,
    positionals: &[String],
    options: &[(String, String)],
) -> Result<mptunnel::Config, String> {
    let cl = mptunnel::cli::CommandLine {
        positionals: positionals.to_vec(),
        options: options.to_vec(),
    };
    mptunnel::cli::build(prog, role, &cl, &mptunnel::cli::process_env).map_err(|e| e.to_string())
}

/// Flags for the signals that ask a running tool for something: SIGHUP (re-read the
/// configuration) and SIGUSR1 (print the stats table). Windows has neither.
#[derive(Default)]
pub struct RequestFlags {
    pub reload: Arc<AtomicBool>,
    pub stats: Arc<AtomicBool>,
}

impl RequestFlags {
    /// Registers the handlers (a no-op where the signals do not exist).
    pub fn install() -> std::io::Result<RequestFlags> {
        let f = RequestFlags::default();
        #[cfg(unix)]
        {
            signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&f.reload))?;
            signal_hook::flag::register(signal_hook::consts::SIGUSR1, Arc::clone(&f.stats))?;
        }
        Ok(f)
    }
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
    match mptunnel::genkey() {
        Ok(k) => {
            println!("{k}");
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
    reread: &dyn Fn() -> Result<mptunnel::Config, String>,
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
    let requests = RequestFlags::install().unwrap_or_else(|e| {
        log::warn!("cannot install the SIGHUP/SIGUSR1 handlers: {e}");
        RequestFlags::default()
    });
    let running = match tunnel.start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{prog}: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let handle = running.handle();
    let format = if config.stats_json {
        StatsFormat::Json
    } else {
        StatsFormat::Text
    };
    let every = config.stats_interval;
    let mut next_report = every.map(|e| Instant::now() + e);
    while handle.is_running() {
        if is_set(&flag) {
            log::info!("signal received: shutting down");
            break;
        }
        if requests.stats.swap(false, Ordering::Relaxed) {
            // SIGUSR1: the table, as text on stderr whatever the report format.
            eprintln!("{}", handle.stats().to_text());
        }
        if requests.reload.swap(false, Ordering::Relaxed) {
            reload(handle, reread);
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
    // Stops it (CLOSE to the peers) if a signal came, waits for it if it failed.
    let result = running.stop();
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

/// SIGHUP: the configuration is read again and applied, or refused as a whole (the running
/// one stays) with the reason logged.
fn reload(handle: &mptunnel::TunnelHandle, reread: &dyn Fn() -> Result<mptunnel::Config, String>) {
    let config = match reread_checked(reread) {
        Ok(c) => c,
        Err(e) => {
            log::error!("event=reload_refused reason={e:?}");
            return;
        }
    };
    match handle.reload(&config) {
        Ok(summary) => log::info!("event=reloaded changes={summary:?}"),
        Err(e) => log::error!("event=reload_refused reason={:?}", e.to_string()),
    }
}

fn reread_checked(
    reread: &dyn Fn() -> Result<mptunnel::Config, String>,
) -> Result<mptunnel::Config, String> {
    let c = reread()?;
    for w in &c.warnings {
        log::warn!("{w}");
    }
    Ok(c)
}

/// Starts logging at the configured level (default warn: quiet).
pub fn init_logging_from(prog: &'static str, c: &mptunnel::Config) {
    let level = c.log_level.unwrap_or(log::LevelFilter::Warn);
    init_logger(prog, level);
    for w in &c.warnings {
        log::warn!("{w}");
    }
}
