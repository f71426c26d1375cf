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

/// Parses a log level name as the tools accept it (`error`, `warn`, `info`, `debug`, `trace`, `off`).
pub fn parse_log_level(s: &str) -> Result<log::LevelFilter, String> {
    match s.to_ascii_lowercase().as_str() {
        "off" | "quiet" | "0" => Ok(log::LevelFilter::Off),
        "error" | "1" => Ok(log::LevelFilter::Error),
        "warn" | "warning" | "2" => Ok(log::LevelFilter::Warn),
        "info" | "3" => Ok(log::LevelFilter::Info),
        "debug" | "4" => Ok(log::LevelFilter::Debug),
        "trace" | "5" => Ok(log::LevelFilter::Trace),
        _ => Err(format!(
            "unknown log level '{s}' (expected error, warn, info, debug, trace or off)"
        )),
    }
}

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
