//! The native part of the `mptunnel` Python package. It binds the core crate directly; the
//! Pythonic API (classes with keyword arguments, exceptions, docstrings) lives in
//! `python/mptunnel/__init__.py`, which calls these.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mptunnel::{Config, MultipathListener, MultipathSocket, Role, SharedTunnel, Tunnel};
use pyo3::exceptions::{PyOSError, PyTimeoutError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;

/// Blocking waits give the interpreter a chance to handle Ctrl-C this often.
const SLICE: Duration = Duration::from_millis(100);

fn package_error(py: Python<'_>, class: &str, msg: String) -> PyErr {
    match py.import("mptunnel").and_then(|m| m.getattr(class)) {
        Ok(cls) => match cls.call1((msg.clone(),)) {
            Ok(inst) => PyErr::from_value(inst),
            Err(e) => e,
        },
        Err(_) => PyOSError::new_err(msg),
    }
}

fn config_error(py: Python<'_>, msg: String) -> PyErr {
    package_error(py, "ConfigError", msg)
}

fn closed_error(py: Python<'_>, what: &str) -> PyErr {
    package_error(py, "Error", format!("{what} is closed"))
}

fn tunnel_error(py: Python<'_>, e: mptunnel::Error) -> PyErr {
    match e {
        mptunnel::Error::Config(c) => config_error(py, c.to_string()),
        mptunnel::Error::Io(what, err) => {
            let errno = err.raw_os_error().unwrap_or(0);
            PyOSError::new_err((errno, format!("{what}: {err}")))
        }
        e @ (mptunnel::Error::State(_) | mptunnel::Error::Panicked) => {
            package_error(py, "Error", e.to_string())
        }
        mptunnel::Error::Closed => closed_error(py, "tunnel"),
    }
}

fn build_config(py: Python<'_>, role: Role, options: Vec<(String, String)>) -> PyResult<Config> {
    let mut c = Config::new(role);
    // A config file first, so that explicit options override its settings.
    let (files, rest): (Vec<_>, Vec<_>) = options.into_iter().partition(|(k, _)| k == "config");
    for (k, v) in files.into_iter().chain(rest) {
        if k == "config" {
            c.load_file(&v)
                .map_err(|e| config_error(py, e.to_string()))?;
            continue;
        }
        c.set(&k, &v).map_err(|e| {
            let shown = mptunnel::config::shown_value(&k, &v);
            config_error(py, format!("{k}={shown}: {}", e.message))
        })?;
    }
    Ok(c)
}

/// A forwarding endpoint (what mpclient and mpserver run).
#[pyclass(module = "mptunnel._native")]
struct NativeTunnel {
    inner: Arc<SharedTunnel>,
    local_addr: String,
}

#[pymethods]
impl NativeTunnel {
    #[new]
    fn new(py: Python<'_>, role: &str, options: Vec<(String, String)>) -> PyResult<Self> {
        let role = match role {
            "client" => Role::Client,
            "server" => Role::Server,
            _ => {
                return Err(config_error(
                    py,
                    format!("role must be 'client' or 'server', not {role:?}"),
                ))
            }
        };
        let c = build_config(py, role, options)?;
        let t = Tunnel::new(&c).map_err(|e| tunnel_error(py, e))?;
        Ok(NativeTunnel {
            local_addr: t.local_addr().to_string(),
            inner: Arc::new(SharedTunnel::new(t)),
        })
    }

    /// A tunnel from a command line, as mpclient / mpserver read theirs (`mptunnel::cli`):
    /// the seed's positionals, the option table's long options, and the environment.
    #[staticmethod]
    fn from_command_line(
        py: Python<'_>,
        role: &str,
        positionals: Vec<String>,
        options: Vec<(String, String)>,
    ) -> PyResult<Self> {
        let (role, prog) = match role {
            "client" => (Role::Client, "mpclient"),
            "server" => (Role::Server, "mpserver"),
            _ => {
                return Err(config_error(
                    py,
                    format!("role must be 'client' or 'server', not {role:?}"),
                ))
            }
        };
        let cl = mptunnel::cli::CommandLine {
            positionals,
            options,
        };
        let c = mptunnel::cli::build(prog, role, &cl, &mptunnel::cli::process_env)
            .map_err(|e| config_error(py, e))?;
        let t = Tunnel::new(&c).map_err(|e| tunnel_error(py, e))?;
        Ok(NativeTunnel {
            local_addr: t.local_addr().to_string(),
            inner: Arc::new(SharedTunnel::new(t)),
        })
    }

    /// The stats report as the tools print it (text).
    fn stats_text(&self, py: Python<'_>) -> String {
        let t = Arc::clone(&self.inner);
        py.detach(move || t.handle().stats().to_text())
    }

    /// Starts the loop on a background thread (no-op if already running).
    fn start(&self, py: Python<'_>) -> PyResult<()> {
        match self.inner.start() {
            Ok(()) | Err(mptunnel::Error::State(_)) => Ok(()),
            Err(e) => Err(tunnel_error(py, e)),
        }
    }

    /// Blocks until stopped (by `stop()` from another thread, or Ctrl-C).
    fn run(&self, py: Python<'_>) -> PyResult<()> {
        self.start(py)?;
        while self.inner.handle().is_running() {
            py.detach(|| std::thread::sleep(SLICE));
            if let Err(e) = py.check_signals() {
                self.stop(py);
                return Err(e);
            }
        }
        let t = Arc::clone(&self.inner);
        py.detach(move || t.join()).map_err(|e| tunnel_error(py, e))
    }

    /// Stops the loop (sending CLOSE to peers) and waits for it. Idempotent, any thread.
    fn stop(&self, py: Python<'_>) {
        let t = Arc::clone(&self.inner);
        let _ = py.detach(move || t.stop());
    }

    fn stats_json(&self, py: Python<'_>) -> String {
        let t = Arc::clone(&self.inner);
        py.detach(move || t.handle().stats().to_json())
    }

    /// Switches the scheduling mode of the running client.
    fn set_mode(&self, py: Python<'_>, mode: &str) -> PyResult<()> {
        let m = mptunnel::Mode::parse(mode).map_err(|e| config_error(py, e))?;
        let t = Arc::clone(&self.inner);
        py.detach(move || t.handle().set_mode(m))
            .map_err(|e| tunnel_error(py, e))
    }

    /// Applies new options (the same keywords as the constructor) to the running tunnel;
    /// returns what changed.
    fn reload(
        &self,
        py: Python<'_>,
        role: &str,
        options: Vec<(String, String)>,
    ) -> PyResult<String> {
        let role = if role == "server" {
            Role::Server
        } else {
            Role::Client
        };
        let c = build_config(py, role, options)?;
        let t = Arc::clone(&self.inner);
        py.detach(move || t.handle().reload(&c))
            .map_err(|e| tunnel_error(py, e))
    }

    fn is_running(&self) -> bool {
        self.inner.handle().is_running()
    }

    /// Where the metrics endpoint listens (`HOST:PORT`), if the `metrics` option was given.
    #[getter]
    fn metrics_addr(&self) -> Option<String> {
        self.inner.handle().metrics_addr().map(|a| a.to_string())
    }

    #[getter]
    fn local_addr(&self) -> String {
        self.local_addr.clone()
    }
}

impl Drop for NativeTunnel {
    // An endpoint that goes out of scope stops (CLOSE to peers) and frees its sockets.
    fn drop(&mut self) {
        let _ = self.inner.stop();
    }
}

fn recv_loop<T: Send>(
    py: Python<'_>,
    timeout: Option<f64>,
    mut attempt: impl FnMut(Duration) -> io::Result<T> + Send,
    what: &str,
) -> PyResult<T> {
    let deadline = match timeout {
        Some(t) if t.is_nan() || t < 0.0 => {
            return Err(config_error(
                py,
                format!("timeout must be >= 0 or None, not {t}"),
            ))
        }
        Some(t) => Some(Instant::now() + Duration::from_secs_f64(t.min(1e9))),
        None => None,
    };
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            None => SLICE,
        };
        match py.detach(|| attempt(slice)) {
            Ok(v) => return Ok(v),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(PyTimeoutError::new_err(format!(
                        "no datagram within {:?} s",
                        timeout.unwrap_or(0.0)
                    )));
                }
                py.check_signals()?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                return Err(closed_error(py, what))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn send_error(py: Python<'_>, e: io::Error, what: &str) -> PyErr {
    if e.kind() == io::ErrorKind::NotConnected {
        closed_error(py, what)
    } else {
        e.into()
    }
}

/// Client side of the in-process multipath datagram API.
#[pyclass(module = "mptunnel._native")]
struct NativeSocket {
    inner: Arc<MultipathSocket>,
}

#[pymethods]
impl NativeSocket {
    #[new]
    fn new(py: Python<'_>, options: Vec<(String, String)>) -> PyResult<Self> {
        let c = build_config(py, Role::Client, options)?;
        let s = py
            .detach(|| MultipathSocket::connect(&c))
            .map_err(|e| tunnel_error(py, e))?;
        Ok(NativeSocket { inner: Arc::new(s) })
    }

    fn send(&self, py: Python<'_>, data: &[u8]) -> PyResult<()> {
        self.inner
            .send(data)
            .map_err(|e| send_error(py, e, "socket"))
    }

    #[pyo3(signature = (timeout=None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyBytes>> {
        let s = Arc::clone(&self.inner);
        let d = recv_loop(py, timeout, move |slice| s.recv(Some(slice)), "socket")?;
        Ok(PyBytes::new(py, &d))
    }

    fn fileno(&self) -> i64 {
        self.inner.notify_fd() as i64
    }

    fn close(&self, py: Python<'_>) {
        let s = Arc::clone(&self.inner);
        py.detach(move || s.close());
    }

    fn stats_json(&self, py: Python<'_>) -> String {
        let s = Arc::clone(&self.inner);
        py.detach(move || s.stats().to_json())
    }
}

/// Server side of the in-process multipath datagram API.
#[pyclass(module = "mptunnel._native")]
struct NativeListener {
    inner: Arc<MultipathListener>,
}

#[pymethods]
impl NativeListener {
    #[new]
    fn new(py: Python<'_>, options: Vec<(String, String)>) -> PyResult<Self> {
        let c = build_config(py, Role::Server, options)?;
        let l = py
            .detach(|| MultipathListener::bind(&c))
            .map_err(|e| tunnel_error(py, e))?;
        Ok(NativeListener { inner: Arc::new(l) })
    }

    #[pyo3(signature = (timeout=None))]
    fn recv_from<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<(Bound<'py, PyBytes>, u64)> {
        let l = Arc::clone(&self.inner);
        let (d, peer) = recv_loop(
            py,
            timeout,
            move |slice| l.recv_from(Some(slice)),
            "listener",
        )?;
        Ok((PyBytes::new(py, &d), peer))
    }

    fn send_to(&self, py: Python<'_>, data: &[u8], peer: u64) -> PyResult<()> {
        self.inner
            .send_to(data, peer)
            .map_err(|e| send_error(py, e, "listener"))
    }

    fn fileno(&self) -> i64 {
        self.inner.notify_fd() as i64
    }

    fn close(&self, py: Python<'_>) {
        let l = Arc::clone(&self.inner);
        py.detach(move || l.close());
    }

    fn stats_json(&self, py: Python<'_>) -> String {
        let l = Arc::clone(&self.inner);
        py.detach(move || l.stats().to_json())
    }

    #[getter]
    fn local_addr(&self) -> String {
        self.inner.local_addr().to_string()
    }
}

/// The option table (`mptunnel::options`) as JSON: a list of objects with `name`,
/// `aliases`, `roles` (`client`, `server`, `both`), `kind` (`ms`, `seconds`, `count`,
/// `listen`, `host:port`, `path`, `file`, `key`, `choice`, `log-level`, `flag`),
/// `value_name`, `default` and `help`.
#[pyfunction]
fn options_json() -> String {
    let list: Vec<serde_json::Value> = mptunnel::options::OPTIONS
        .iter()
        .map(|o| {
            serde_json::json!({
                "name": o.name,
                "aliases": o.aliases,
                "roles": o.roles.name(),
                "kind": o.kind.name(),
                "value_name": o.value_name,
                "default": o.default,
                "help": o.help,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// A new random key, as 44 base64 characters.
#[pyfunction]
fn genkey(py: Python<'_>) -> PyResult<String> {
    mptunnel::genkey().map_err(|e| package_error(py, "Error", e))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeTunnel>()?;
    m.add_class::<NativeSocket>()?;
    m.add_class::<NativeListener>()?;
    m.add_function(wrap_pyfunction!(genkey, m)?)?;
    m.add_function(wrap_pyfunction!(options_json, m)?)?;
    m.add("VERSION", mptunnel::VERSION)?;
    Ok(())
}
