//! Where the library's log messages go: stderr (warnings and errors, by default) or a
//! callback the application installs.

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CString};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

use log::LevelFilter;
use parking_lot::RwLock;

/// Receives one log message. `level` is 1 error, 2 warn, 3 info, 4 debug, 5 trace; `msg` is a
/// NUL-terminated UTF-8 string valid only during the call (copy it to keep it). It may be
/// called from any thread, including the library's own, and must not throw (C++) or call
/// `mpt_set_log_callback`.
pub type mpt_log_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, level: c_int, msg: *const c_char)>;

struct Sink {
    callback: mpt_log_callback,
    userdata: *mut c_void,
    level: LevelFilter,
}

// SAFETY: `userdata` is only handed back to the application's callback; the application is
// told the callback runs on any thread.
unsafe impl Send for Sink {}
unsafe impl Sync for Sink {}

static SINK: RwLock<Sink> = parking_lot::const_rwlock(Sink {
    callback: None,
    userdata: std::ptr::null_mut(),
    level: LevelFilter::Warn,
});

thread_local! {
    /// True while this thread is inside the application's callback.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

struct FfiLogger;

static LOGGER: FfiLogger = FfiLogger;

/// True when the library's logger is the process's `log` logger.
static OURS: AtomicBool = AtomicBool::new(false);

fn set_max_level(level: LevelFilter) {
    if OURS.load(Ordering::SeqCst) {
        log::set_max_level(level);
    }
}

fn level_number(l: log::Level) -> c_int {
    match l {
        log::Level::Error => 1,
        log::Level::Warn => 2,
        log::Level::Info => 3,
        log::Level::Debug => 4,
        log::Level::Trace => 5,
    }
}

fn level_filter(n: c_int) -> LevelFilter {
    match n {
        i32::MIN..=0 => LevelFilter::Off,
        1 => LevelFilter::Error,
        2 => LevelFilter::Warn,
        3 => LevelFilter::Info,
        4 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

impl log::Log for FfiLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        // Only the library's own messages, not those of the crates it uses.
        metadata.target().starts_with("mptunnel") && metadata.level() <= SINK.read_recursive().level
    }

    fn log(&self, record: &log::Record) {
        if !record.target().starts_with("mptunnel") {
            return;
        }
        // Held for the whole call, so that once mpt_set_log_callback returns, the previous
        // callback is no longer running anywhere.
        let sink = SINK.read_recursive();
        if record.level() > sink.level {
            return;
        }
        match sink.callback {
            Some(cb) => {
                let msg =
                    CString::new(record.args().to_string().replace('\0', "?")).unwrap_or_default();
                // (A nested call, from an mpt_ function the callback calls, keeps the flag.)
                let outer = IN_CALLBACK.with(|f| f.replace(true));
                // SAFETY: the application installed `cb` with this userdata.
                unsafe { cb(sink.userdata, level_number(record.level()), msg.as_ptr()) };
                IN_CALLBACK.with(|f| f.set(outer));
            }
            None => {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "mptunnel: {}: {}",
                    record.level().as_str().to_ascii_lowercase(),
                    record.args()
                );
            }
        }
    }

    fn flush(&self) {}
}

/// Installs the library's logger (once per process). If the host already installed a Rust
/// logger (a Rust program linking this library), that one stays.
pub(crate) fn ensure_logger() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if log::set_logger(&LOGGER).is_ok() {
            OURS.store(true, Ordering::SeqCst);
            log::set_max_level(SINK.read().level);
        }
    });
}

/// What every handle does with a new config: its `log-level` sets the stderr level, and
/// its warnings (a key file others can read) are logged.
pub(crate) fn announce(c: &mptunnel::Config) {
    if let Some(level) = c.log_level {
        apply_config_level(level);
    }
    for w in &c.warnings {
        log::warn!("{w}");
    }
}

/// Sets the stderr level from a config's `log-level`, unless a callback is installed.
fn apply_config_level(level: LevelFilter) {
    if IN_CALLBACK.with(|f| f.get()) {
        return;
    }
    let mut sink = SINK.write();
    if sink.callback.is_none() {
        sink.level = level;
        set_max_level(level);
    }
}

/// Sends the library's log messages at `max_level` and more severe (1 error, 2 warn, 3 info,
/// 4 debug, 5 trace; 0 or less: none) to `cb` instead of stderr. With `cb` NULL, messages go
/// back to stderr (as `mptunnel: warn: ...`), filtered by `max_level`. Until this is called,
/// warnings and errors go to stderr; a config's `log-level` also sets the stderr level.
///
/// `userdata` is passed back to every call of `cb`; the library never frees or reads it. When
/// this function returns, the previous callback is no longer running on any thread, so its
/// userdata may be freed.
///
/// Thread safety: any thread, except from inside the callback itself (ignored there).
#[no_mangle]
pub extern "C" fn mpt_set_log_callback(
    cb: mpt_log_callback,
    userdata: *mut c_void,
    max_level: c_int,
) {
    let _ = crate::boundary::guard("mpt_set_log_callback", || {
        if IN_CALLBACK.with(|f| f.get()) {
            return Err(crate::boundary::Failure::new(
                crate::MPT_ERR_STATE,
                "cannot be called from inside the log callback",
            ));
        }
        let level = level_filter(max_level);
        let mut sink = SINK.write();
        sink.callback = cb;
        sink.userdata = if cb.is_some() {
            userdata
        } else {
            std::ptr::null_mut()
        };
        sink.level = level;
        set_max_level(level);
        Ok(())
    });
}
