//! `mpt_config`: the settings of a tunnel, socket or listener.

use std::ffi::c_char;

use mptunnel::config::shown_value;
use mptunnel::{Config, Role};

use crate::boundary::{guard, handle, handle_mut, out_ptr, text, Failure};
use crate::*;

/// Which end a configuration describes.
pub type mpt_role = u32;
/// The client end (what mpclient runs; `mpt_socket_connect`).
pub const MPT_ROLE_CLIENT: mpt_role = 1;
/// The server end (what mpserver runs; `mpt_listener_bind`).
pub const MPT_ROLE_SERVER: mpt_role = 2;

/// Settings for a tunnel, socket or listener. Opaque; create with `mpt_config_new`.
pub struct mpt_config {
    pub(crate) inner: Config,
}

/// Creates an empty configuration for `role` (`MPT_ROLE_CLIENT` or `MPT_ROLE_SERVER`) and
/// stores it in `*out`.
///
/// Ownership: the caller owns the new config and frees it with `mpt_config_free`. Tunnels,
/// sockets and listeners copy what they need, so the config may be freed or changed right
/// after they are created.
/// Errors: `MPT_ERR_NULL` (out), `MPT_ERR_INVALID_ARG` (unknown role).
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_config_new(role: mpt_role, out: *mut *mut mpt_config) -> mpt_result {
    guard("mpt_config_new", || {
        let out = out_ptr(out, "out")?;
        let role = match role {
            MPT_ROLE_CLIENT => Role::Client,
            MPT_ROLE_SERVER => Role::Server,
            other => {
                return Err(Failure::new(
                    MPT_ERR_INVALID_ARG,
                    format!(
                        "role {other} is neither MPT_ROLE_CLIENT ({MPT_ROLE_CLIENT}) nor \
                         MPT_ROLE_SERVER ({MPT_ROLE_SERVER})"
                    ),
                ))
            }
        };
        let c = Box::new(mpt_config {
            inner: Config::new(role),
        });
        // SAFETY: checked non-NULL.
        unsafe { *out = Box::into_raw(c) };
        Ok(())
    })
}

/// Sets one option. Keys are the command-line tools' long options (a leading `--` and `_`
/// for `-` are accepted); values are text, as on the command line. The options (the same
/// table drives the tools, config files and Python; a test keeps this list equal to it):
/// - `listen` (both; ADDR): where to listen: `HOST:PORT`, `[IPv6]:PORT` or a bare port (all
///   IPv4 addresses); port 0 = any free port;
/// - `target` (server; HOST:PORT; also `forward`): the service datagrams are forwarded to;
/// - `path` (client; each call appends one, at most 64): `HOST:PORT` or `HOST PORT` of a
///   bridge (or of the server), optionally followed by `name=NAME` (shown in stats),
///   `bind=LOCAL_IP` (source address), `dev=IFACE` (Linux: send through that interface) or
///   `weight=N` (its share in `balance`) or `backup` (data only while every other path is
///   down), e.g. `"10.0.0.2 4001 name=dsl bind=192.168.1.10"`;
/// - `config` (both; FILE): reads a config file, as `mpt_config_load_file`;
/// - `mode` (client): `redundant`, `failover`, `k-best=K` or `balance` (switch a running
///   tunnel with `mpt_tunnel_set_mode`);
/// - `metrics` (both; ADDR): serve `/metrics`, `/stats` and the live page over HTTP on ADDR
///   (a bare port is 127.0.0.1);
/// - `probe-interval` (both; whole milliseconds, default 250);
/// - `down-after` (both; whole milliseconds, default 1000);
/// - `idle-timeout` (both; seconds, fractions allowed, default 120);
/// - `max-sessions` (both; count, default 1024);
/// - `window` (both; packets, a multiple of 64, default 8192);
/// - `key` (both): the pre-shared key, 44 base64 characters (32 bytes; `mpt_genkey` makes
///   one; both ends need the same);
/// - `key-file` (both; FILE): a file holding the key;
/// - `stats-interval` (both; seconds) and `stats-json` (both; `true`/`false`): used by the
///   tools only;
/// - `log-level` (both): `error`, `warn`, `info`, `debug`, `trace` or `off`: the stderr level
///   while no log callback is set.
///
/// Host names are resolved when the tunnel, socket or listener is created.
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_INVALID_ARG` (not UTF-8), `MPT_ERR_CONFIG` (unknown key,
/// bad value; the message names both, except that a bad `key` is never echoed). On error the
/// config is unchanged.
/// Thread safety: not concurrently with other calls on the same config.
#[no_mangle]
pub extern "C" fn mpt_config_set(
    c: *mut mpt_config,
    key: *const c_char,
    value: *const c_char,
) -> mpt_result {
    guard("mpt_config_set", || {
        let c = handle_mut(c, "config")?;
        let key = text(key, "key")?;
        let value = text(value, "value")?;
        let mut next = c.inner.clone();
        next.set(key, value).map_err(|e| {
            Failure::new(
                MPT_ERR_CONFIG,
                format!("{key} = {}: {}", shown_value(key, value), e.message),
            )
        })?;
        c.inner = next;
        Ok(())
    })
}

/// Reads a config file: the tools' format (`name = value` lines, and for a client the
/// original tool's path lines `HOST PORT`). Settings add to or override what is set already.
///
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_INVALID_ARG` (path not UTF-8), `MPT_ERR_CONFIG` (cannot
/// read the file, or a bad line: the message gives `file:line` and the value). On error the
/// config is unchanged.
/// Thread safety: not concurrently with other calls on the same config.
#[no_mangle]
pub extern "C" fn mpt_config_load_file(c: *mut mpt_config, path: *const c_char) -> mpt_result {
    guard("mpt_config_load_file", || {
        let c = handle_mut(c, "config")?;
        let path = text(path, "path")?;
        let mut next = c.inner.clone();
        next.load_file(path)
            .map_err(|e| Failure::new(MPT_ERR_CONFIG, e.to_string()))?;
        c.inner = next;
        Ok(())
    })
}

/// Checks that the config is complete and consistent for `mpt_tunnel_new` (a client needs
/// `listen` and at least one `path`; a server needs `listen` and `target`), without binding
/// anything.
///
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_CONFIG` (the message says what is missing or wrong).
/// Thread safety: any thread, not concurrently with changes to the same config.
#[no_mangle]
pub extern "C" fn mpt_config_validate(c: *const mpt_config) -> mpt_result {
    guard("mpt_config_validate", || {
        let c = handle(c, "config")?;
        c.inner
            .validate()
            .map_err(|e| Failure::new(MPT_ERR_CONFIG, e.to_string()))
    })
}

/// Frees a config. NULL is a no-op; do not free the same config twice.
///
/// Thread safety: no other call on this config may be running or follow.
#[no_mangle]
pub extern "C" fn mpt_config_free(c: *mut mpt_config) {
    let _ = guard("mpt_config_free", || {
        if !c.is_null() {
            // SAFETY: created by mpt_config_new and not freed before (header contract).
            drop(unsafe { Box::from_raw(c) });
        }
        Ok(())
    });
}
