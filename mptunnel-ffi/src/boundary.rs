//! The boundary every exported function goes through: panic catching, NULL checks, the
//! thread's last error, and conversions of the core's errors into result codes.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::*;

/// A result code: `MPT_OK` (0) or one of the `MPT_ERR_*` numbers, which never change.
pub type mpt_result = u32;

/// Why a call failed: the code returned to C and the message `mpt_last_error` gives.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: mpt_result,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: mpt_result, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

pub(crate) type Res<T = ()> = Result<T, Failure>;

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Longest message kept for `mpt_last_error` (longer ones are cut at a character boundary).
const MAX_MESSAGE: usize = 1024;

pub(crate) fn set_last_error(mut message: String) {
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    let c = CString::new(message.replace('\0', "?")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

pub(crate) fn last_error_ptr() -> *const c_char {
    // The CString's heap buffer does not move until the next set_last_error on this thread.
    LAST_ERROR
        .try_with(|e| e.borrow().as_ptr())
        .unwrap_or(c"".as_ptr())
}

pub(crate) fn result_str(r: mpt_result) -> &'static CStr {
    match r {
        MPT_OK => c"success",
        MPT_ERR_NULL => c"a required pointer was NULL",
        MPT_ERR_INVALID_ARG => c"invalid argument",
        MPT_ERR_CONFIG => c"invalid configuration",
        MPT_ERR_IO => c"operating-system error",
        MPT_ERR_TIMEOUT => c"timed out",
        MPT_ERR_CLOSED => c"closed",
        MPT_ERR_BUFFER_TOO_SMALL => c"buffer too small",
        MPT_ERR_WOULD_BLOCK => c"send queue full, try again",
        MPT_ERR_TOO_LARGE => c"datagram too large",
        MPT_ERR_STATE => c"not allowed in the current state",
        MPT_ERR_UNSUPPORTED => c"not supported on this platform",
        MPT_ERR_PANIC => c"internal error (caught panic)",
        _ => c"unknown result code",
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Runs the body of exported function `name`: catches panics, records the failure message
/// for `mpt_last_error`, and returns the code.
pub(crate) fn guard(name: &str, body: impl FnOnce() -> Res) -> mpt_result {
    crate::log_sink::ensure_logger();
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => MPT_OK,
        Ok(Err(f)) => {
            set_last_error(format!("{name}: {}", f.message));
            f.code
        }
        Err(p) => {
            set_last_error(format!(
                "{name}: internal error: {} (please report this)",
                panic_message(&*p)
            ));
            MPT_ERR_PANIC
        }
    }
}

/// Like [`guard`] for functions that return a value instead of a code (`fallback` on
/// failure, with the message recorded).
pub(crate) fn guard_value<T>(name: &str, fallback: T, body: impl FnOnce() -> Res<T>) -> T {
    let mut out = None;
    let r = guard(name, || {
        out = Some(body()?);
        Ok(())
    });
    match (r, out) {
        (MPT_OK, Some(v)) => v,
        _ => fallback,
    }
}

/// A shared reference from a handle pointer, or `MPT_ERR_NULL` naming the argument.
pub(crate) fn handle<'a, T>(p: *const T, what: &str) -> Res<&'a T> {
    // SAFETY: non-NULL handles come from this library's `_new` functions (header contract).
    unsafe { p.as_ref() }.ok_or_else(|| Failure::new(MPT_ERR_NULL, format!("{what} is NULL")))
}

/// A mutable reference from a handle pointer, or `MPT_ERR_NULL`.
pub(crate) fn handle_mut<'a, T>(p: *mut T, what: &str) -> Res<&'a mut T> {
    // SAFETY: as in `handle`.
    unsafe { p.as_mut() }.ok_or_else(|| Failure::new(MPT_ERR_NULL, format!("{what} is NULL")))
}

/// Checks that an out-parameter is not NULL.
pub(crate) fn out_ptr<T>(p: *mut T, what: &str) -> Res<*mut T> {
    if p.is_null() {
        Err(Failure::new(MPT_ERR_NULL, format!("{what} is NULL")))
    } else {
        Ok(p)
    }
}

/// A UTF-8 string argument.
pub(crate) fn text<'a>(p: *const c_char, what: &str) -> Res<&'a str> {
    if p.is_null() {
        return Err(Failure::new(MPT_ERR_NULL, format!("{what} is NULL")));
    }
    // SAFETY: non-NULL and NUL-terminated by the header's contract.
    let c = unsafe { CStr::from_ptr(p) };
    c.to_str().map_err(|_| {
        Failure::new(
            MPT_ERR_INVALID_ARG,
            format!("{what} is not valid UTF-8: {:?}", c.to_string_lossy()),
        )
    })
}

/// An input byte buffer of `len` bytes, at most `max`. NULL is accepted only with `len` 0.
pub(crate) fn in_bytes<'a>(p: *const u8, len: usize, max: usize, what: &str) -> Res<&'a [u8]> {
    if len > max {
        return Err(Failure::new(
            MPT_ERR_TOO_LARGE,
            format!("{what} has {len} bytes; the tunnel carries at most {max}"),
        ));
    }
    if len == 0 {
        return Ok(&[]);
    }
    if p.is_null() {
        return Err(Failure::new(
            MPT_ERR_NULL,
            format!("{what} is NULL but its length is {len}"),
        ));
    }
    // SAFETY: `len` is small (<= max < isize::MAX) and the caller promises `len` readable
    // bytes at `p`.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// An output byte buffer of capacity `cap`, at most `limit` of which will be used (so that a
/// huge `cap` never becomes a huge slice). NULL is accepted only with `cap` 0.
pub(crate) fn out_bytes<'a>(p: *mut u8, cap: usize, limit: usize, what: &str) -> Res<&'a mut [u8]> {
    if cap == 0 {
        return Ok(&mut []);
    }
    if p.is_null() {
        return Err(Failure::new(
            MPT_ERR_NULL,
            format!("{what} is NULL but its capacity is {cap}"),
        ));
    }
    // SAFETY: the caller promises `cap` writable bytes; we use at most min(cap, limit).
    Ok(unsafe { std::slice::from_raw_parts_mut(p, cap.min(limit)) })
}

/// Writes `s` and a terminating NUL into `buf` (capacity `cap`); `*len` gets the length
/// without the NUL, or the capacity needed (with the NUL) on `MPT_ERR_BUFFER_TOO_SMALL`.
pub(crate) fn write_text(s: &str, buf: *mut c_char, cap: usize, len: *mut usize) -> Res {
    let len = out_ptr(len, "len")?;
    if cap > 0 && buf.is_null() {
        return Err(Failure::new(
            MPT_ERR_NULL,
            format!("buf is NULL but its capacity is {cap}"),
        ));
    }
    let needed = s.len() + 1;
    if cap < needed {
        // SAFETY: checked non-NULL.
        unsafe { *len = needed };
        return Err(Failure::new(
            MPT_ERR_BUFFER_TOO_SMALL,
            format!("the buffer holds {cap} bytes; {needed} are needed"),
        ));
    }
    let out = out_bytes(buf.cast::<u8>(), cap, needed, "buf")?;
    out[..s.len()].copy_from_slice(s.as_bytes());
    out[s.len()] = 0;
    // SAFETY: checked non-NULL.
    unsafe { *len = s.len() };
    Ok(())
}

/// `timeout_ms`: 0 = do not wait, negative = wait without limit.
pub(crate) fn timeout(ms: std::ffi::c_int) -> Option<Duration> {
    (ms >= 0).then(|| Duration::from_millis(ms as u64))
}

/// Maps an error of the core's in-process sockets.
pub(crate) fn io_failure(e: io::Error) -> Failure {
    let code = match e.kind() {
        io::ErrorKind::TimedOut => MPT_ERR_TIMEOUT,
        io::ErrorKind::NotConnected => MPT_ERR_CLOSED,
        io::ErrorKind::WouldBlock => MPT_ERR_WOULD_BLOCK,
        _ => MPT_ERR_IO,
    };
    Failure::new(code, e.to_string())
}

/// Maps an error of the core's tunnel construction or loop.
pub(crate) fn tunnel_failure(e: mptunnel::Error) -> Failure {
    match e {
        mptunnel::Error::Config(c) => Failure::new(MPT_ERR_CONFIG, c.to_string()),
        e @ mptunnel::Error::Io(..) => Failure::new(MPT_ERR_IO, e.to_string()),
        e @ mptunnel::Error::State(_) => Failure::new(MPT_ERR_STATE, e.to_string()),
        e @ mptunnel::Error::Closed => Failure::new(MPT_ERR_CLOSED, e.to_string()),
        e @ mptunnel::Error::Panicked => Failure::new(MPT_ERR_PANIC, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_panic_becomes_a_code_and_a_message() {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let r = guard("mpt_test", || panic!("boom"));
        std::panic::set_hook(prev);
        assert_eq!(r, MPT_ERR_PANIC);
        assert!(
            last().contains("mpt_test: internal error: boom"),
            "{}",
            last()
        );
    }

    #[test]
    fn failures_name_the_function_and_keep_outputs_untouched() {
        let mut len = 777usize;
        let mut buf = [0x55 as c_char; 4];
        let r = guard("mpt_x", || {
            write_text("hello", buf.as_mut_ptr(), 4, &mut len)
        });
        assert_eq!(r, MPT_ERR_BUFFER_TOO_SMALL);
        assert_eq!(len, 6, "capacity needed, NUL included");
        assert!(buf.iter().all(|&b| b == 0x55));
        assert!(last().starts_with("mpt_x: "));
        let mut buf = [0 as c_char; 6];
        let r = guard("mpt_x", || {
            write_text("hello", buf.as_mut_ptr(), 6, &mut len)
        });
        assert_eq!(r, MPT_OK);
        assert_eq!(len, 5);
        let r = guard("mpt_x", || {
            write_text("x", buf.as_mut_ptr(), 6, std::ptr::null_mut())
        });
        assert_eq!(r, MPT_ERR_NULL);
        assert_eq!(last(), "mpt_x: len is NULL");
    }

    #[test]
    fn buffers_are_checked_before_use() {
        assert_eq!(
            in_bytes(std::ptr::null(), 3, 10, "buf").err().unwrap().code,
            MPT_ERR_NULL
        );
        assert_eq!(
            in_bytes(std::ptr::null(), usize::MAX, 10, "buf")
                .err()
                .unwrap()
                .code,
            MPT_ERR_TOO_LARGE
        );
        assert!(in_bytes(std::ptr::null(), 0, 10, "buf").unwrap().is_empty());
        let mut b = [0u8; 8];
        assert_eq!(
            out_bytes(b.as_mut_ptr(), usize::MAX, 8, "buf")
                .unwrap()
                .len(),
            8
        );
    }
}
