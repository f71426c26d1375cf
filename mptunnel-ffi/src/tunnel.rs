//! `mpt_tunnel`: a forwarding endpoint, what mpclient and mpserver run.

use std::ffi::c_char;

use mptunnel::{SharedTunnel, Tunnel};

use crate::boundary::{guard, handle, out_ptr, text, tunnel_failure, write_text, Failure};
use crate::*;

/// A forwarding endpoint: the client end listens for an application's UDP datagrams and
/// sends each over every path; the server end forwards to its target. Opaque.
pub struct mpt_tunnel {
    inner: SharedTunnel,
}

/// Builds a tunnel from a config: validates it, resolves addresses and binds every socket,
/// so that mistakes (bad address, port in use) show up here. It does not run yet: call
/// `mpt_tunnel_start` or `mpt_tunnel_run`.
///
/// Ownership: the caller owns `*out` and frees it with `mpt_tunnel_free`; `c` is only read
/// and may be freed afterwards.
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_CONFIG` (incomplete or invalid config, unknown host),
/// `MPT_ERR_IO` (cannot bind; the message has the OS's reason).
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_tunnel_new(c: *const mpt_config, out: *mut *mut mpt_tunnel) -> mpt_result {
    guard("mpt_tunnel_new", || {
        let c = handle(c, "config")?;
        let out = out_ptr(out, "out")?;
        crate::log_sink::announce(&c.inner);
        let t = Tunnel::new(&c.inner).map_err(tunnel_failure)?;
        let b = Box::new(mpt_tunnel {
            inner: SharedTunnel::new(t),
        });
        // SAFETY: checked non-NULL.
        unsafe { *out = Box::into_raw(b) };
        Ok(())
    })
}

/// Switches the scheduling mode of a running client tunnel: `"redundant"`, `"failover"`,
/// `"k-best=K"` or `"balance"` (the values of the `mode` option). The server hears of it in
/// band and schedules that client's replies the same way.
///
/// Errors: `MPT_ERR_NULL`; `MPT_ERR_CONFIG` (unknown mode; the message names it, or on a
/// server: the mode is the client's); `MPT_ERR_STATE` (not running).
/// Thread safety: any thread, not from the log callback (it waits for the loop).
#[no_mangle]
pub extern "C" fn mpt_tunnel_set_mode(t: *const mpt_tunnel, mode: *const c_char) -> mpt_result {
    guard("mpt_tunnel_set_mode", || {
        let t = handle(t, "tunnel")?;
        let m = text(mode, "mode")?;
        let mode = mptunnel::Mode::parse(m).map_err(|e| Failure::new(MPT_ERR_CONFIG, e))?;
        t.inner.handle().set_mode(mode).map_err(tunnel_failure)
    })
}

/// Applies a new config to a running tunnel, as SIGHUP does for the tools: paths added and
/// removed (unchanged ones keep their index and figures), mode and timing options changed,
/// sessions kept. A config that cannot apply (invalid, or changing what needs a restart:
/// listen, target, key, window) is refused as a whole and the running one stays; the
/// message (`mpt_last_error`) says why. `c` is only read.
///
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_CONFIG`, `MPT_ERR_STATE` (not running).
/// Thread safety: any thread, not from the log callback (it waits for the loop).
#[no_mangle]
pub extern "C" fn mpt_tunnel_reload(t: *const mpt_tunnel, c: *const mpt_config) -> mpt_result {
    guard("mpt_tunnel_reload", || {
        let t = handle(t, "tunnel")?;
        let c = handle(c, "config")?;
        t.inner
            .handle()
            .reload(&c.inner)
            .map(|_| ())
            .map_err(tunnel_failure)
    })
}

/// Runs the tunnel and blocks the calling thread until `mpt_tunnel_stop` is called (from
/// another thread, a signal-handling thread, or the log callback). The loop itself runs on
/// a thread of the library, which blocks all signals. If the tunnel was started already
/// (with `mpt_tunnel_start`, or by `mpt_tunnel_run` on another thread), waits until it stops.
///
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_CLOSED` (already stopped), `MPT_ERR_IO` (the loop failed;
/// reported to the first caller that waits), `MPT_ERR_PANIC`.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_tunnel_run(t: *mut mpt_tunnel) -> mpt_result {
    guard("mpt_tunnel_run", || {
        handle(t, "tunnel")?.inner.run().map_err(tunnel_failure)
    })
}

/// Starts the tunnel on a background thread of the library and returns at once.
///
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_STATE` (already running), `MPT_ERR_CLOSED` (already
/// stopped), `MPT_ERR_IO` (cannot create the thread).
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_tunnel_start(t: *mut mpt_tunnel) -> mpt_result {
    guard("mpt_tunnel_start", || {
        handle(t, "tunnel")?.inner.start().map_err(tunnel_failure)
    })
}

/// Stops the tunnel: it sends CLOSE to its peers, closes its sockets and its thread ends.
/// Returns once it has stopped (except when called from the log callback on the tunnel's
/// own thread, where it only asks). Stopping a stopped or never-started tunnel is `MPT_OK`;
/// a stopped tunnel cannot be started again.
///
/// Errors: `MPT_ERR_NULL`; `MPT_ERR_IO` / `MPT_ERR_PANIC` if the loop had failed (reported
/// once).
/// Thread safety: any thread, but not from a signal handler (it is not async-signal-safe):
/// to stop on SIGINT/SIGTERM, let the handler set a flag, and call this from a thread that
/// watches the flag (with `mpt_tunnel_start`, the main thread can do it).
#[no_mangle]
pub extern "C" fn mpt_tunnel_stop(t: *mut mpt_tunnel) -> mpt_result {
    guard("mpt_tunnel_stop", || {
        handle(t, "tunnel")?.inner.stop().map_err(tunnel_failure)
    })
}

/// Writes the tunnel's statistics as one JSON object (NUL-terminated) into `buf`, the
/// figures the command-line tools print: `role`, `epoch`, `uptime_s`, `encrypted`,
/// `sessions`; `totals` (`local_rx_datagrams`/`_bytes` from the application side,
/// `local_tx_datagrams`/`_bytes` delivered to it, `net_tx_packets`, `net_rx_packets`,
/// `duplicates` and one counter per drop reason: `malformed`, `checksum_errors`,
/// `auth_failures`, ...); and `paths`, one object per path with `name`, `remote`, `state`
/// (`up`, `lossy`, `down`), `rtt_ms`, `loss_out`, `loss_in` (null until measured),
/// `tx_packets`, `rx_packets`. Every field is described in docs/STATS.md.
/// `*len` receives the length without the NUL.
///
/// Errors: `MPT_ERR_NULL`; `MPT_ERR_BUFFER_TOO_SMALL` with `*len` = capacity needed (the
/// snapshot can grow between two calls: leave some room, e.g. 4096 more). `buf` may be NULL
/// when `cap` is 0, to ask for the size.
/// Thread safety: any thread, while the tunnel is running or after it stopped (final figures).
#[no_mangle]
pub extern "C" fn mpt_tunnel_stats_json(
    t: *const mpt_tunnel,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> mpt_result {
    guard("mpt_tunnel_stats_json", || {
        let t = handle(t, "tunnel")?;
        out_ptr(len, "len")?;
        write_text(&t.inner.handle().stats().to_json(), buf, cap, len)
    })
}

/// Like `mpt_tunnel_stats_json`, as the human-readable text the tools log.
///
/// Errors and thread safety: as `mpt_tunnel_stats_json`.
#[no_mangle]
pub extern "C" fn mpt_tunnel_stats_text(
    t: *const mpt_tunnel,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> mpt_result {
    guard("mpt_tunnel_stats_text", || {
        let t = handle(t, "tunnel")?;
        out_ptr(len, "len")?;
        write_text(&t.inner.handle().stats().to_text(), buf, cap, len)
    })
}

/// Writes the address the tunnel listens on (e.g. `127.0.0.1:40123`, `[::1]:4000`) into
/// `buf`, NUL-terminated; useful after `listen = 127.0.0.1:0`. `*len` as in
/// `mpt_tunnel_stats_json`.
///
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_BUFFER_TOO_SMALL`.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_tunnel_local_addr(
    t: *const mpt_tunnel,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> mpt_result {
    guard("mpt_tunnel_local_addr", || {
        let t = handle(t, "tunnel")?;
        write_text(&t.inner.handle().local_addr().to_string(), buf, cap, len)
    })
}

/// Frees a tunnel, stopping it first if it runs (its peers get CLOSE). NULL is a no-op; do
/// not free the same tunnel twice.
///
/// Thread safety: no other call on this tunnel may be running or follow (stop it, let other
/// threads return from `mpt_tunnel_run`, then free). Never call it from the log callback.
#[no_mangle]
pub extern "C" fn mpt_tunnel_free(t: *mut mpt_tunnel) {
    let _ = guard("mpt_tunnel_free", || {
        if t.is_null() {
            return Ok(());
        }
        // SAFETY: created by mpt_tunnel_new and not freed before (header contract).
        let tunnel = unsafe { Box::from_raw(t) };
        if tunnel.inner.is_loop_thread() {
            // Freed from its own loop thread: the loop still uses it. Stop it and leak the
            // handle rather than free memory in use.
            tunnel.inner.handle().stop();
            std::mem::forget(tunnel);
            return Err(Failure::new(
                MPT_ERR_STATE,
                "called from the tunnel's own thread; stopped it, but not freed",
            ));
        }
        if let Err(e) = tunnel.inner.stop() {
            log::warn!("tunnel stopped with an error: {e}");
        }
        Ok(())
    });
}
