//! `mpt_socket` and `mpt_listener`: multipath datagrams in-process, with no local UDP hop.

use std::ffi::{c_char, c_int};

use mptunnel::{MultipathListener, MultipathSocket, RecvInto};

use crate::boundary::{
    guard, guard_value, handle, in_bytes, io_failure, out_bytes, out_ptr, timeout, tunnel_failure,
    write_text, Failure, Res,
};
use crate::*;

/// No datagram is larger than a UDP payload, so no receive buffer needs more.
use mptunnel::protocol::packet::MAX_UDP_PAYLOAD as MAX_UDP;

/// A descriptor for poll/epoll/select: an `int` file descriptor on POSIX systems.
#[cfg(not(windows))]
pub type mpt_fd = c_int;
/// A descriptor for poll/epoll/select: a `SOCKET`-sized value on Windows.
#[cfg(windows)]
pub type mpt_fd = usize;

/// What `mpt_socket_fd` / `mpt_listener_fd` return when there is no descriptor (the header
/// defines it as `MPT_INVALID_FD`).
#[cfg(not(windows))]
const MPT_INVALID_FD: mpt_fd = -1;
#[cfg(windows)]
const MPT_INVALID_FD: mpt_fd = usize::MAX;

/// The client side of in-process multipath datagrams: a program sends and receives through
/// it directly, and the library carries each datagram over every path to an mpserver or an
/// `mpt_listener`. Opaque.
pub struct mpt_socket {
    inner: MultipathSocket,
}

/// The server side of in-process multipath datagrams: accepts sessions from mpclients and
/// `mpt_socket`s; each session is a peer named by a 64-bit id. Opaque.
pub struct mpt_listener {
    inner: MultipathListener,
}

fn received(r: RecvInto, len: *mut usize, peer: *mut u64) -> Res {
    match r {
        RecvInto::Datagram { len: n, peer: p } => {
            // SAFETY: both checked non-NULL by the callers (peer may be NULL for sockets).
            unsafe {
                *len = n;
                if !peer.is_null() {
                    *peer = p;
                }
            }
            Ok(())
        }
        RecvInto::TooSmall { needed } => {
            // SAFETY: checked non-NULL by the callers.
            unsafe { *len = needed };
            Err(Failure::new(
                MPT_ERR_BUFFER_TOO_SMALL,
                format!("the next datagram has {needed} bytes; it stays queued"),
            ))
        }
    }
}

/// Starts a client endpoint with the config's paths (`path`, and optionally `key`, `mode`,
/// ...; `listen` is not used) and stores the socket in `*out`. It runs on a background
/// thread of the library until `mpt_socket_free`.
///
/// Ownership: the caller owns `*out` and frees it with `mpt_socket_free`; `c` is only read.
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_CONFIG` (not a client config, no path, bad address),
/// `MPT_ERR_IO`.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_socket_connect(
    c: *const mpt_config,
    out: *mut *mut mpt_socket,
) -> mpt_result {
    guard("mpt_socket_connect", || {
        let c = handle(c, "config")?;
        let out = out_ptr(out, "out")?;
        crate::log_sink::announce(&c.inner);
        let inner = MultipathSocket::connect(&c.inner).map_err(tunnel_failure)?;
        // SAFETY: checked non-NULL.
        unsafe { *out = Box::into_raw(Box::new(mpt_socket { inner })) };
        Ok(())
    })
}

/// Sends one datagram of `len` bytes (0 allowed; `buf` may then be NULL) over every path.
/// It is queued and sent by the library's thread; delivery is not guaranteed (UDP).
///
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_TOO_LARGE` (see `mpt_socket_max_datagram`),
/// `MPT_ERR_WOULD_BLOCK` (queue full: try again shortly), `MPT_ERR_CLOSED`.
/// Thread safety: any thread, concurrently with other calls on the same socket (but not
/// with `mpt_socket_free`).
#[no_mangle]
pub extern "C" fn mpt_socket_send(s: *mut mpt_socket, buf: *const u8, len: usize) -> mpt_result {
    guard("mpt_socket_send", || {
        let s = handle(s, "socket")?;
        let data = in_bytes(buf, len, s.inner.max_datagram(), "buf")?;
        s.inner.send(data).map_err(io_failure)
    })
}

/// Receives the next datagram from the server into `buf` (capacity `cap`) and stores its
/// length in `*len`. `timeout_ms`: 0 = do not wait, negative = wait until one arrives or the
/// socket is closed.
///
/// Errors: `MPT_ERR_NULL` (`len`, or `buf` with `cap` > 0), `MPT_ERR_TIMEOUT`,
/// `MPT_ERR_CLOSED`, `MPT_ERR_BUFFER_TOO_SMALL` (`*len` = the datagram's size; it stays
/// queued, so call again with a larger buffer; 65507 bytes always suffice).
/// Thread safety: any thread; several threads may receive at once (each datagram goes to one).
#[no_mangle]
pub extern "C" fn mpt_socket_recv(
    s: *mut mpt_socket,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
    timeout_ms: c_int,
) -> mpt_result {
    guard("mpt_socket_recv", || {
        let s = handle(s, "socket")?;
        let len = out_ptr(len, "len")?;
        let out = out_bytes(buf, cap, MAX_UDP, "buf")?;
        let r = s
            .inner
            .recv_into(out, timeout(timeout_ms))
            .map_err(io_failure)?;
        received(r, len, std::ptr::null_mut())
    })
}

/// A descriptor that is readable while a received datagram waits: add it to poll/epoll/
/// select with POLLIN, then call `mpt_socket_recv` with timeout 0 until `MPT_ERR_TIMEOUT`.
/// Do not read from it or close it; it belongs to the socket. It becomes readable too when
/// the socket is closed. On Windows it is a `SOCKET` (a loopback UDP socket) for `select` or
/// `WSAPoll`. Returns `MPT_INVALID_FD` on error (NULL socket) with `mpt_last_error()` set.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_socket_fd(s: *const mpt_socket) -> mpt_fd {
    guard_value("mpt_socket_fd", MPT_INVALID_FD, || {
        Ok(handle(s, "socket")?.inner.notify_fd() as mpt_fd)
    })
}

/// The largest datagram this socket carries (65475 plain, 65455 with a key); 0 if `s` is
/// NULL.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_socket_max_datagram(s: *const mpt_socket) -> usize {
    guard_value("mpt_socket_max_datagram", 0, || {
        Ok(handle(s, "socket")?.inner.max_datagram())
    })
}

/// Writes the socket's statistics as JSON, as `mpt_tunnel_stats_json` does.
///
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_BUFFER_TOO_SMALL`.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_socket_stats_json(
    s: *const mpt_socket,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> mpt_result {
    guard("mpt_socket_stats_json", || {
        let s = handle(s, "socket")?;
        out_ptr(len, "len")?;
        write_text(&s.inner.stats().to_json(), buf, cap, len)
    })
}

/// Closes the socket: sends what is queued and then CLOSE to the server, stops the
/// library's thread, and makes `mpt_socket_send` return `MPT_ERR_CLOSED`;
/// `mpt_socket_recv` still hands out datagrams that had arrived, then returns
/// `MPT_ERR_CLOSED` (blocked calls wake). The descriptor stays readable. Idempotent. Use it
/// to wake a thread blocked in `mpt_socket_recv` before freeing.
///
/// Errors: `MPT_ERR_NULL`.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_socket_close(s: *mut mpt_socket) -> mpt_result {
    guard("mpt_socket_close", || {
        handle(s, "socket")?.inner.close();
        Ok(())
    })
}

/// Closes (as `mpt_socket_close`) and frees a socket. NULL is a no-op; do not free twice.
///
/// Thread safety: no other call on this socket may be running or follow (close it first
/// and let blocked threads return).
#[no_mangle]
pub extern "C" fn mpt_socket_free(s: *mut mpt_socket) {
    let _ = guard("mpt_socket_free", || {
        if !s.is_null() {
            // SAFETY: created by mpt_socket_connect and not freed before (header contract).
            drop(unsafe { Box::from_raw(s) });
        }
        Ok(())
    });
}

/// Binds the config's `listen` address (port 0 picks a free one; see
/// `mpt_listener_local_addr`) and starts a server endpoint on a background thread; `target`
/// is not used. Stores the listener in `*out`.
///
/// Ownership: the caller owns `*out` and frees it with `mpt_listener_free`; `c` is only read.
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_CONFIG` (not a server config, no `listen`, bad address),
/// `MPT_ERR_IO` (cannot bind: in use, no permission).
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_listener_bind(
    c: *const mpt_config,
    out: *mut *mut mpt_listener,
) -> mpt_result {
    guard("mpt_listener_bind", || {
        let c = handle(c, "config")?;
        let out = out_ptr(out, "out")?;
        crate::log_sink::announce(&c.inner);
        let inner = MultipathListener::bind(&c.inner).map_err(tunnel_failure)?;
        // SAFETY: checked non-NULL.
        unsafe { *out = Box::into_raw(Box::new(mpt_listener { inner })) };
        Ok(())
    })
}

/// Receives the next datagram from any client into `buf` (capacity `cap`); its length goes
/// to `*len` and the sending peer's session id to `*peer` (use it with
/// `mpt_listener_send` to answer). `timeout_ms` as in `mpt_socket_recv`.
///
/// Errors: `MPT_ERR_NULL` (`len`, `peer`, or `buf` with `cap` > 0), `MPT_ERR_TIMEOUT`,
/// `MPT_ERR_CLOSED`, `MPT_ERR_BUFFER_TOO_SMALL` (`*len` = size needed; nothing consumed).
/// Thread safety: any thread; several threads may receive at once.
#[no_mangle]
pub extern "C" fn mpt_listener_recv(
    l: *mut mpt_listener,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
    peer: *mut u64,
    timeout_ms: c_int,
) -> mpt_result {
    guard("mpt_listener_recv", || {
        let l = handle(l, "listener")?;
        let len = out_ptr(len, "len")?;
        let peer = out_ptr(peer, "peer")?;
        let out = out_bytes(buf, cap, MAX_UDP, "buf")?;
        let r = l
            .inner
            .recv_into(out, timeout(timeout_ms))
            .map_err(io_failure)?;
        received(r, len, peer)
    })
}

/// Sends one datagram of `len` bytes to `peer` (a session id from `mpt_listener_recv`) over
/// every path that peer uses. A peer that has gone away is not an error here; the datagram is
/// dropped and counted (`unknown_session` in the stats).
///
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_TOO_LARGE`, `MPT_ERR_WOULD_BLOCK`, `MPT_ERR_CLOSED`.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_listener_send(
    l: *mut mpt_listener,
    peer: u64,
    buf: *const u8,
    len: usize,
) -> mpt_result {
    guard("mpt_listener_send", || {
        let l = handle(l, "listener")?;
        let data = in_bytes(buf, len, l.inner.max_datagram(), "buf")?;
        l.inner.send_to(data, peer).map_err(io_failure)
    })
}

/// As `mpt_socket_fd`, for a listener.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_listener_fd(l: *const mpt_listener) -> mpt_fd {
    guard_value("mpt_listener_fd", MPT_INVALID_FD, || {
        Ok(handle(l, "listener")?.inner.notify_fd() as mpt_fd)
    })
}

/// Writes the bound address (e.g. `127.0.0.1:40123`) into `buf`, NUL-terminated, as
/// `mpt_tunnel_local_addr` does.
///
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_BUFFER_TOO_SMALL`.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_listener_local_addr(
    l: *const mpt_listener,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> mpt_result {
    guard("mpt_listener_local_addr", || {
        let l = handle(l, "listener")?;
        write_text(&l.inner.local_addr().to_string(), buf, cap, len)
    })
}

/// Writes the listener's statistics as JSON, as `mpt_tunnel_stats_json` does.
///
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_BUFFER_TOO_SMALL`.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_listener_stats_json(
    l: *const mpt_listener,
    buf: *mut c_char,
    cap: usize,
    len: *mut usize,
) -> mpt_result {
    guard("mpt_listener_stats_json", || {
        let l = handle(l, "listener")?;
        out_ptr(len, "len")?;
        write_text(&l.inner.stats().to_json(), buf, cap, len)
    })
}

/// Closes the listener (CLOSE to every peer), as `mpt_socket_close` does.
///
/// Errors: `MPT_ERR_NULL`.
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_listener_close(l: *mut mpt_listener) -> mpt_result {
    guard("mpt_listener_close", || {
        handle(l, "listener")?.inner.close();
        Ok(())
    })
}

/// Closes and frees a listener. NULL is a no-op; do not free twice.
///
/// Thread safety: no other call on this listener may be running or follow.
#[no_mangle]
pub extern "C" fn mpt_listener_free(l: *mut mpt_listener) {
    let _ = guard("mpt_listener_free", || {
        if !l.is_null() {
            // SAFETY: created by mpt_listener_bind and not freed before (header contract).
            drop(unsafe { Box::from_raw(l) });
        }
        Ok(())
    });
}
