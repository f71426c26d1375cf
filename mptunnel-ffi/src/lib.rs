//! The C ABI of mptunnel: `libmptunnel.so` / `libmptunnel.a`, described by the generated
//! `include/mptunnel.h`.
//!
//! Conventions, shared by every function (the header repeats them):
//! - every fallible function returns an `mpt_result`: `MPT_OK` (0) or an error code whose
//!   number never changes; `mpt_last_error()` then tells the calling thread what went wrong;
//! - outputs go through trailing out-parameters, written only on success, except that on
//!   `MPT_ERR_BUFFER_TOO_SMALL` the length out-parameter receives the capacity needed (and
//!   nothing is consumed);
//! - every pointer is checked for NULL; `*_free(NULL)` does nothing;
//! - a panic inside the library is caught at the boundary and becomes `MPT_ERR_PANIC`.
//!
//! Model: rustls-ffi. The work itself is done by the core crate; this crate only checks
//! arguments, converts types and catches panics.

#![allow(non_camel_case_types)]
// Every exported function checks its pointers for NULL before use; the remaining contract
// (a non-NULL pointer points at what the header says) is the caller's, as in any C API.
#![allow(clippy::missing_safety_doc, clippy::not_unsafe_ptr_arg_deref)]

mod boundary;
mod config;
mod log_sink;
mod socket;
mod tunnel;

use std::ffi::c_char;

pub use boundary::mpt_result;
pub use config::*;
pub use log_sink::*;
pub use socket::*;
pub use tunnel::*;

/// Major version of the library this header belongs to.
pub const MPT_VERSION_MAJOR: u32 = 0;
/// Minor version of the library this header belongs to.
pub const MPT_VERSION_MINOR: u32 = 1;
/// Patch version of the library this header belongs to.
pub const MPT_VERSION_PATCH: u32 = 0;

/// Success.
pub const MPT_OK: mpt_result = 0;
/// A required pointer argument was NULL.
pub const MPT_ERR_NULL: mpt_result = 1;
/// An argument had a value the function does not accept (unknown role, text that is not
/// UTF-8, a length that cannot be right).
pub const MPT_ERR_INVALID_ARG: mpt_result = 2;
/// The configuration is invalid or incomplete: unknown key, bad value, bad address, missing
/// setting. `mpt_last_error()` names the key and the value (and `file:line` for files).
pub const MPT_ERR_CONFIG: mpt_result = 3;
/// An operating-system call failed (cannot bind: address in use, no permission, ...).
pub const MPT_ERR_IO: mpt_result = 4;
/// Nothing arrived within `timeout_ms`.
pub const MPT_ERR_TIMEOUT: mpt_result = 5;
/// The handle was closed or stopped.
pub const MPT_ERR_CLOSED: mpt_result = 6;
/// The output buffer is too small; the length out-parameter holds the capacity needed and
/// nothing was consumed.
pub const MPT_ERR_BUFFER_TOO_SMALL: mpt_result = 7;
/// The send queue is full (the application sends faster than the paths carry); try again.
pub const MPT_ERR_WOULD_BLOCK: mpt_result = 8;
/// The datagram is larger than the tunnel carries (see `mpt_socket_max_datagram`).
pub const MPT_ERR_TOO_LARGE: mpt_result = 9;
/// The call does not fit the handle's state (for example starting a tunnel twice).
pub const MPT_ERR_STATE: mpt_result = 10;
/// Not available on this platform.
pub const MPT_ERR_UNSUPPORTED: mpt_result = 11;
/// A bug inside the library was caught at the boundary; the process can go on, but the
/// handle involved should be freed. Please report it with `mpt_last_error()`.
pub const MPT_ERR_PANIC: mpt_result = 12;
/// The highest result code: the codes are MPT_OK to MPT_ERR_LAST with no gaps. It moves up
/// when a code is added (numbers are never reused), so a loop up to it sees every code.
pub const MPT_ERR_LAST: mpt_result = MPT_ERR_PANIC;

/// The library's version ("MAJOR.MINOR.PATCH"): a static string, never freed.
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// A short English description of a result code (for example "timed out"): a static string,
/// never freed. Unknown codes give "unknown result code".
///
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_result_str(r: mpt_result) -> *const c_char {
    boundary::result_str(r).as_ptr()
}

/// The message of the last failed call on the calling thread ("" when none failed yet), for
/// example `mpt_config_set: colour = "blue": unknown option 'colour'`. The string belongs to the library and
/// stays valid until the next failing `mpt_` call on the same thread; copy it to keep it.
/// Successful calls do not clear it.
///
/// Thread safety: any thread; each thread has its own message.
#[no_mangle]
pub extern "C" fn mpt_last_error() -> *const c_char {
    boundary::last_error_ptr()
}

/// Writes a new random key (44 base64 characters and a NUL) into `buf`, for the `key`
/// option or a key file; both ends of a tunnel need the same key. `*len` receives 44.
///
/// Errors: `MPT_ERR_NULL`, `MPT_ERR_BUFFER_TOO_SMALL` (`*len` = 45), `MPT_ERR_IO` (the OS
/// has no randomness to give).
/// Thread safety: any thread.
#[no_mangle]
pub extern "C" fn mpt_genkey(buf: *mut c_char, cap: usize, len: *mut usize) -> mpt_result {
    boundary::guard("mpt_genkey", || {
        boundary::out_ptr(len, "len")?;
        let key = mptunnel::genkey().map_err(|e| boundary::Failure::new(MPT_ERR_IO, e))?;
        boundary::write_text(&key, buf, cap, len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn version_macros_match_the_package() {
        assert_eq!(
            MPT_VERSION_MAJOR.to_string(),
            env!("CARGO_PKG_VERSION_MAJOR")
        );
        assert_eq!(
            MPT_VERSION_MINOR.to_string(),
            env!("CARGO_PKG_VERSION_MINOR")
        );
        assert_eq!(
            MPT_VERSION_PATCH.to_string(),
            env!("CARGO_PKG_VERSION_PATCH")
        );
        let header = include_str!("../../include/mptunnel.h");
        for (name, value) in [
            (
                "MPT_VERSION_MAJOR",
                env!("CARGO_PKG_VERSION_MAJOR").to_string(),
            ),
            (
                "MPT_VERSION_MINOR",
                env!("CARGO_PKG_VERSION_MINOR").to_string(),
            ),
            (
                "MPT_VERSION_PATCH",
                env!("CARGO_PKG_VERSION_PATCH").to_string(),
            ),
            (
                "MPT_VERSION_STRING",
                format!("\"{}\"", env!("CARGO_PKG_VERSION")),
            ),
        ] {
            let line = format!("#define {name} {value}\n");
            assert!(header.contains(&line), "include/mptunnel.h lacks {line:?}");
        }
        let v = unsafe { CStr::from_ptr(mpt_version()) };
        assert_eq!(v.to_str().unwrap(), mptunnel::VERSION);
    }

    /// The numbers of the result codes the header defines (`#define MPT_OK 0`,
    /// `#define MPT_ERR_NULL 1`, ...), whatever they are.
    fn codes_in_header() -> Vec<(String, mpt_result)> {
        include_str!("../../include/mptunnel.h")
            .lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("#define ")?.split_whitespace();
                let (name, value) = (w.next()?, w.next()?);
                let is_code = name == "MPT_OK" || name.starts_with("MPT_ERR_");
                Some((name.to_string(), value.parse().ok().filter(|_| is_code)?))
            })
            .collect()
    }

    /// The options the header documents for `mpt_config_set` are exactly the table's.
    #[test]
    fn config_set_documents_every_option_of_the_table() {
        let header = include_str!("../../include/mptunnel.h");
        let end = header.find("mpt_result mpt_config_set(").expect("declared");
        let start = header[..end].rfind("/**").expect("documented");
        let doc = &header[start..end];
        let documented: Vec<&str> = doc
            .lines()
            .filter_map(|l| l.trim_start_matches([' ', '*']).strip_prefix("- `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let mut table: Vec<&str> = mptunnel::options::OPTIONS.iter().map(|o| o.name).collect();
        // `stats-interval` and `stats-json` share a bullet.
        let mut listed = documented.clone();
        if doc.contains("`stats-interval` (both; seconds) and `stats-json`") {
            listed.push("stats-json");
        }
        listed.sort_unstable();
        table.sort_unstable();
        assert_eq!(listed, table, "documented: {documented:?}");
    }

    #[test]
    fn every_code_has_a_description() {
        let codes = codes_in_header();
        assert!(codes.len() > 10, "{codes:?}");
        // MPT_ERR_LAST is the highest code, and there are no gaps below it.
        let mut numbers: Vec<mpt_result> = codes.iter().map(|(_, n)| *n).collect();
        numbers.sort_unstable();
        let expected: Vec<mpt_result> = (MPT_OK..=MPT_ERR_LAST).collect();
        assert_eq!(numbers, expected, "codes in the header: {codes:?}");
        for (name, r) in &codes {
            let s = unsafe { CStr::from_ptr(mpt_result_str(*r)) };
            assert_ne!(s.to_str().unwrap(), "unknown result code", "{name} ({r})");
        }
        for r in [MPT_ERR_LAST + 1, 9999, mpt_result::MAX] {
            let s = unsafe { CStr::from_ptr(mpt_result_str(r)) };
            assert_eq!(s.to_str().unwrap(), "unknown result code", "{r}");
        }
    }
}
