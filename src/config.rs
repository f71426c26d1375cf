//! Configuration: plain data with validation, and the one parser behind the CLI, config files
//! and key/value setters.
//!
//! Config file grammar: `#` starts a comment; blank lines are ignored; a *path line* is
//! `HOST PORT [key=value ...]` (the original tool's format; IPv6 bare or in brackets); a
//! *setting line* is `name = value` where `name` is a long option (`mode = redundant`).

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use crate::options::{self, Kind, OptionSpec, Roles};
use crate::protocol::crypto::Key;
use crate::protocol::params::Params;
use crate::protocol::scheduler::Mode;
use crate::protocol::transmit::MAX_PATHS;

/// Which endpoint a configuration is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// mpclient: local listen port, paths to bridges.
    Client,
    /// mpserver: listen port for bridges, one target.
    Server,
}

/// A configuration error, with the file and line when it came from a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: `file:line`, or empty.
    pub location: String,
    /// What is wrong, naming the bad value.
    pub message: String,
}

impl ConfigError {
    /// An error with no location.
    pub fn new(message: impl Into<String>) -> Self {
        ConfigError {
            location: String::new(),
            message: message.into(),
        }
    }

    fn at(mut self, file: &str, line: usize) -> Self {
        self.location = format!("{file}:{line}");
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.location.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.location, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// One path (bridge) of a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathConfig {
    /// Bridge host name or address.
    pub host: String,
    /// Bridge port.
    pub port: u16,
    /// Local address to send from (multi-homed hosts).
    pub bind: Option<IpAddr>,
    /// Local interface to send through (Linux `SO_BINDTODEVICE`).
    pub dev: Option<String>,
    /// Name for logs and stats.
    pub name: Option<String>,
    /// Relative weight in the `balance` mode (its share is capacity × weight).
    pub weight: u32,
    /// A backup path (`backup` on its line): data only while every other path is down.
    pub backup: bool,
}

impl PathConfig {
    /// `HOST:PORT` for display.
    pub fn remote(&self) -> String {
        join_host_port(&self.host, self.port)
    }

    /// The name shown in stats: the configured one or `HOST:PORT`.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.remote())
    }
}

/// Complete endpoint configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Client or server.
    pub role: Role,
    /// Address to listen on (`HOST:PORT`; a bare port means all IPv4 addresses).
    pub listen: Option<String>,
    /// Server only: where sessions are forwarded (`HOST:PORT`).
    pub target: Option<String>,
    /// Client only: the paths.
    pub paths: Vec<PathConfig>,
    /// Client only: scheduling mode.
    pub mode: Mode,
    /// Where the metrics endpoint (`/metrics`, `/stats`, the live page `/`) listens, if
    /// anywhere (a bare port is 127.0.0.1).
    pub metrics: Option<String>,
    /// Protocol knobs.
    pub params: Params,
    /// Print stats every this often (None: never).
    pub stats_interval: Option<Duration>,
    /// The tools print stats reports as JSON lines.
    pub stats_json: bool,
    /// Log level name, if set.
    pub log_level: Option<log::LevelFilter>,
    /// Things worth a warning found while reading the configuration (e.g. a key file others
    /// can read), for the caller to log once logging is set up.
    pub warnings: Vec<String>,
    /// True while a config file is being read (a file cannot read another).
    loading: Option<String>,
}

impl Config {
    /// Defaults for a role.
    pub fn new(role: Role) -> Self {
        Config {
            role,
            listen: None,
            target: None,
            paths: Vec::new(),
            mode: Mode::default(),
            metrics: None,
            params: Params::default(),
            stats_interval: None,
            stats_json: false,
            log_level: None,
            warnings: Vec::new(),
            loading: None,
        }
    }

    /// Sets one option by its long name (as on the command line, without `--`; the table in
    /// [`crate::options`] lists them). `path` appends a path (`HOST:PORT` or
    /// `HOST PORT [key=value ...]`); `config` reads a config file.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let spec = options::find(key).ok_or_else(|| {
            let shown = key.trim().trim_start_matches("--").replace('_', "-");
            ConfigError::new(format!("unknown option '{shown}'"))
        })?;
        if !spec.roles.includes(self.role) {
            let who = match spec.roles {
                Roles::Client => "the client",
                _ => "the server",
            };
            return Err(ConfigError::new(format!(
                "option '{}' applies only to {who}",
                spec.name
            )));
        }
        let mut value = value.trim().to_string();
        let bare_port = !value.is_empty() && value.chars().all(|c| c.is_ascii_digit());
        if (spec.name == "listen" && self.role == Role::Client || spec.name == "metrics")
            && bare_port
        {
            // A client forwards whatever reaches its port into the tunnel: a bare port is
            // this host's apps only (127.0.0.1), not the LAN (`0.0.0.0:PORT` for that).
            value = format!("127.0.0.1:{value}");
        }
        let value = parse_value(spec, &value)?;
        self.apply(spec.name, value)
    }

    /// Applies a parsed value of the option `name`.
    fn apply(&mut self, name: &str, value: Value) -> Result<(), ConfigError> {
        match (name, value) {
            ("listen", Value::Text(v)) => self.listen = Some(v),
            ("metrics", Value::Text(v)) => self.metrics = Some(v),
            ("target", Value::Text(v)) => self.target = Some(v),
            ("path", Value::Path(p)) => self.add_path(p)?,
            ("config", Value::Text(f)) => {
                if self.loading.is_some() {
                    return Err(ConfigError::new(format!(
                        "a config file cannot read another ('{f}')"
                    )));
                }
                self.load_file(&f)?;
            }
            ("mode", Value::Text(m)) => self.mode = Mode::parse(&m).map_err(ConfigError::new)?,
            ("probe-interval", Value::Duration(d)) => self.params.probe_interval = d,
            ("down-after", Value::Duration(d)) => self.params.down_after = d,
            ("idle-timeout", Value::Duration(d)) => self.params.idle_timeout = d,
            ("max-sessions", Value::Count(n)) => self.params.max_sessions = n as usize,
            ("window", Value::Count(w)) => {
                if w % 64 != 0 {
                    return Err(ConfigError::new(format!(
                        "window '{w}' must be a multiple of 64"
                    )));
                }
                self.params.window_size = w as usize;
            }
            ("key", Value::Key(k)) => {
                self.params.key = Some(k);
                // A key written in a config file is as secret as a key file.
                if let Some(file) = &self.loading {
                    self.warnings.extend(
                        key_file_warning(file).map(|w| w.replacen("key file", "config file", 1)),
                    );
                }
            }
            ("key-file", Value::Text(f)) => {
                let (key, warning) = read_key_file(&f)?;
                self.params.key = Some(key);
                self.warnings.extend(warning);
            }
            ("stats-interval", Value::Duration(d)) => {
                self.stats_interval = (!d.is_zero()).then_some(d);
            }
            ("stats-json", Value::Flag(b)) => self.stats_json = b,
            ("log-level", Value::Level(l)) => self.log_level = Some(l),
            (name, v) => {
                return Err(ConfigError::new(format!(
                    "option '{name}' cannot take {v:?} (a bug: please report it)"
                )))
            }
        }
        Ok(())
    }

    fn add_path(&mut self, path: PathConfig) -> Result<(), ConfigError> {
        if self.paths.len() >= MAX_PATHS {
            return Err(ConfigError::new(format!(
                "too many paths (at most {MAX_PATHS})"
            )));
        }
        self.paths.push(path);
        Ok(())
    }

    /// Reads a config file (see the module docs for the grammar).
    pub fn load_file(&mut self, path: impl AsRef<Path>) -> Result<(), ConfigError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let text = read_bounded(path, MAX_CONFIG_FILE)
            .map_err(|e| ConfigError::new(format!("cannot read config file '{name}': {e}")))?;
        self.load_str(&text, &name)
    }

    /// Parses config text; `name` is used in error locations.
    pub fn load_str(&mut self, text: &str, name: &str) -> Result<(), ConfigError> {
        let outer = self.loading.replace(name.to_string());
        let r = self.load_lines(text, name);
        self.loading = outer;
        r
    }

    fn load_lines(&mut self, text: &str, name: &str) -> Result<(), ConfigError> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let result = if words.get(1) == Some(&"=") || (words.len() == 1 && line.contains('=')) {
                // `name = value` (the value may contain spaces, e.g. a path line).
                let (k, v) = line.split_once('=').unwrap_or((line, ""));
                if v.trim().is_empty() {
                    Err(ConfigError::new(format!(
                        "setting '{}' has no value",
                        k.trim()
                    )))
                } else {
                    self.set(k, v)
                }
            } else if self.role == Role::Client {
                parse_path_words(&words).and_then(|p| self.add_path(p))
            } else {
                Err(ConfigError::new(format!(
                    "expected 'name = value', found '{line}' (path lines belong in a client config)"
                )))
            };
            result.map_err(|e| e.at(name, i + 1))?;
        }
        Ok(())
    }

    /// Checks that everything a forwarding endpoint (what mpclient and mpserver run) needs
    /// is there and consistent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_for(true)
    }

    /// Same for an endpoint whose local side is UDP (`network`: a client's listen address,
    /// a server's target) or a program in this process (a socket or a listener, which need
    /// neither).
    pub fn validate_for(&self, network: bool) -> Result<(), ConfigError> {
        if self.listen.is_none() && (network || self.role == Role::Server) {
            return Err(ConfigError::new(
                "no listen address given (set 'listen': --listen HOST:PORT, or the LISTEN_PORT argument)",
            ));
        }
        match self.role {
            Role::Client => {
                if self.paths.is_empty() {
                    return Err(ConfigError::new(
                        "no paths configured (set 'path' once per path: --path HOST:PORT, or 'HOST PORT' lines in a config file)",
                    ));
                }
            }
            Role::Server => {
                if network && self.target.is_none() {
                    return Err(ConfigError::new(
                        "no target given (set 'target': --target HOST:PORT, or TARGET_HOST TARGET_PORT)",
                    ));
                }
            }
        }
        if self.params.down_after <= self.params.probe_interval {
            return Err(ConfigError::new(format!(
                "down-after ({} ms) must be longer than probe-interval ({} ms)",
                self.params.down_after.as_millis(),
                self.params.probe_interval.as_millis()
            )));
        }
        Ok(())
    }
}

/// An option's value, parsed by its kind.
#[derive(Debug)]
enum Value {
    Duration(Duration),
    Count(u64),
    Text(String),
    Path(PathConfig),
    Key(Key),
    Level(log::LevelFilter),
    Flag(bool),
}

/// Parses `v` as the kind of option `spec` says, naming the option and the value on error.
fn parse_value(spec: &OptionSpec, v: &str) -> Result<Value, ConfigError> {
    let key = spec.name;
    Ok(match spec.kind {
        Kind::Millis { min, max } => Value::Duration(parse_ms(key, v, min, max)?),
        Kind::Seconds { min, max } => Value::Duration(parse_secs(key, v, min, max)?),
        Kind::Count { min, max } => Value::Count(parse_int(key, v, min, max)?),
        Kind::Listen => Value::Text(normalize_listen(v)?),
        Kind::HostPort => {
            let (h, p) = split_host_port(v)?;
            Value::Text(join_host_port(&h, p))
        }
        Kind::Path => {
            let words: Vec<&str> = v.split_whitespace().collect();
            Value::Path(parse_path_words(&words)?)
        }
        Kind::File => {
            if v.is_empty() {
                return Err(ConfigError::new(format!("{key} needs a file name")));
            }
            Value::Text(v.to_string())
        }
        Kind::Key => {
            Value::Key(Key::from_base64(v).map_err(|e| ConfigError::new(format!("key: {e}")))?)
        }
        Kind::Choice(words) => {
            // Mode::parse names the modes planned but not built, so choices are checked there.
            let _ = words;
            Value::Text(v.to_string())
        }
        Kind::LogLevel => Value::Level(parse_log_level(v).map_err(ConfigError::new)?),
        Kind::Flag => match v {
            "true" | "yes" | "on" | "1" => Value::Flag(true),
            "false" | "no" | "off" | "0" => Value::Flag(false),
            _ => {
                return Err(ConfigError::new(format!(
                    "{key} '{v}' is not true or false"
                )))
            }
        },
    })
}

/// Largest config file read: far more than any real one, and a bound for `/dev/zero`.
const MAX_CONFIG_FILE: u64 = 1 << 20;

/// Reads a UTF-8 text file of at most `limit` bytes.
fn read_bounded(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(limit + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {} KiB", limit / 1024),
        ));
    }
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Reads a key file (the 44-character base64 key, surrounding whitespace ignored), with a
/// warning when the file is readable by others.
pub fn read_key_file(path: &str) -> Result<(Key, Option<String>), ConfigError> {
    let text = read_bounded(Path::new(path), 4096)
        .map_err(|e| ConfigError::new(format!("cannot read key file '{path}': {e}")))?;
    let key =
        Key::from_base64(&text).map_err(|e| ConfigError::new(format!("key file '{path}': {e}")))?;
    Ok((key, key_file_warning(path)))
}

/// A warning when a key file can be read by other users.
#[cfg(unix)]
fn key_file_warning(path: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "key file '{path}' holds a key and can be read by other users (mode {mode:o}): \
             chmod 600 '{path}'"
        )
    })
}

#[cfg(not(unix))]
fn key_file_warning(_path: &str) -> Option<String> {
    None
}

fn parse_path_words(words: &[&str]) -> Result<PathConfig, ConfigError> {
    let (host, port, rest) = match words {
        [] => return Err(ConfigError::new("empty path")),
        [one, rest @ ..]
            if one.contains("]:") || (!one.starts_with('[') && one.matches(':').count() == 1) =>
        {
            // `HOST:PORT [key=value ...]`
            let (h, p) = split_host_port(one)?;
            (h, p, rest)
        }
        [_] => {
            return Err(ConfigError::new(format!(
                "path '{}' has no port (expected 'HOST PORT')",
                words[0]
            )))
        }
        [host, port, rest @ ..] => {
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            check_host(&host)?;
            (host, parse_port(port)?, rest)
        }
    };
    let mut path = PathConfig {
        host,
        port,
        bind: None,
        dev: None,
        name: None,
        weight: 1,
        backup: false,
    };
    for kv in rest {
        if *kv == "backup" {
            path.backup = true;
            continue;
        }
        let Some((k, v)) = kv.split_once('=') else {
            return Err(ConfigError::new(format!(
                "unexpected '{kv}' after the port (expected key=value or backup)"
            )));
        };
        match k {
            "bind" => {
                let ip = v.trim_start_matches('[').trim_end_matches(']');
                path.bind = Some(ip.parse().map_err(|_| {
                    ConfigError::new(format!("bind address '{v}' is not an IP address"))
                })?);
            }
            "dev" => {
                if v.is_empty() || v.len() > 15 {
                    return Err(ConfigError::new(format!("interface name '{v}' is invalid")));
                }
                path.dev = Some(v.to_string());
            }
            "name" => {
                if v.is_empty() || v.len() > 64 || v.chars().any(char::is_control) {
                    return Err(ConfigError::new(format!(
                        "path name {v:?} is invalid (1 to 64 characters, no control characters)"
                    )));
                }
                path.name = Some(v.to_string());
            }
            "weight" => path.weight = parse_int("weight", v, 1, 1_000_000)? as u32,
            _ => {
                return Err(ConfigError::new(format!(
                    "unknown path option '{k}' (known: backup, bind, dev, name, weight)"
                )))
            }
        }
    }
    Ok(path)
}

fn check_host(host: &str) -> Result<(), ConfigError> {
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || c == '/' || c == '[' || c == ']')
    {
        return Err(ConfigError::new(format!(
            "host '{host}' is not a valid host name or address"
        )));
    }
    Ok(())
}

/// Parses a port number (1-65535), naming the bad value.
pub fn parse_port(s: &str) -> Result<u16, ConfigError> {
    match s.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(p as u16),
        Ok(_) => Err(ConfigError::new(format!(
            "port '{s}' is out of range (1-65535)"
        ))),
        Err(_) => Err(ConfigError::new(format!("port '{s}' is not a number"))),
    }
}

/// Splits `HOST:PORT` (`[v6]:PORT` for IPv6).
pub fn split_host_port(s: &str) -> Result<(String, u16), ConfigError> {
    split_host_port_inner(s, false)
}

/// Splits `HOST:PORT` like [`split_host_port`], port 0 allowed (a listen address).
pub fn split_host_port_or_zero(s: &str) -> Result<(String, u16), ConfigError> {
    split_host_port_inner(s, true)
}

fn split_host_port_inner(s: &str, allow_zero: bool) -> Result<(String, u16), ConfigError> {
    let bad = || {
        ConfigError::new(format!(
            "address '{s}' is not HOST:PORT (use [addr]:PORT for IPv6)"
        ))
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        let (h, p) = s.rsplit_once(':').ok_or_else(bad)?;
        if h.contains(':') {
            return Err(bad());
        }
        (h, p)
    };
    check_host(host)?;
    if allow_zero && port == "0" {
        return Ok((host.to_string(), 0));
    }
    Ok((host.to_string(), parse_port(port)?))
}

/// `HOST:PORT`, bracketing IPv6 literals.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A listen address: `PORT` means all IPv4 addresses, as the original tool does (a client's
/// bare port is made 127.0.0.1 before it gets here). Port 0 (any free port) is allowed, for
/// programs that read the bound address back.
pub fn normalize_listen(s: &str) -> Result<String, ConfigError> {
    let any_port = |p: &str| if p == "0" { Ok(0) } else { parse_port(p) };
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) {
        return Ok(format!("0.0.0.0:{}", any_port(s)?));
    }
    if let Some(h) = s.strip_suffix(":0") {
        let (h, _) = split_host_port(&format!("{h}:1"))?;
        return Ok(join_host_port(&h, 0));
    }
    let (h, p) = split_host_port(s)?;
    Ok(join_host_port(&h, p))
}

fn parse_int(key: &str, v: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let n: u64 = v
        .parse()
        .map_err(|_| ConfigError::new(format!("{key} '{v}' is not a whole number")))?;
    if n < min || n > max {
        return Err(ConfigError::new(format!(
            "{key} '{v}' is out of range ({min}-{max})"
        )));
    }
    Ok(n)
}

/// How a setting's value appears in an error message: quoted, shortened when long, and
/// never the secret itself for `key`.
pub fn shown_value(key: &str, value: &str) -> String {
    if key.trim().trim_start_matches("--") == "key" {
        return "<the key>".into();
    }
    match value.char_indices().nth(64) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &value[..cut], value.len()),
        None => format!("{value:?}"),
    }
}

/// Parses a log level as every front end accepts it: `error`, `warn`, `info`, `debug`,
/// `trace` or `off`, or the numbers 1 to 5 (0 = off).
pub fn parse_log_level(s: &str) -> Result<log::LevelFilter, String> {
    match s.trim().to_ascii_lowercase().as_str() {
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

fn parse_ms(key: &str, v: &str, min: u64, max: u64) -> Result<Duration, ConfigError> {
    let v2 = v.strip_suffix("ms").unwrap_or(v);
    Ok(Duration::from_millis(parse_int(
        &format!("{key} (ms)"),
        v2,
        min,
        max,
    )?))
}

fn parse_secs(key: &str, v: &str, min: f64, max: f64) -> Result<Duration, ConfigError> {
    let v2 = v.strip_suffix('s').unwrap_or(v);
    let x: f64 = v2
        .parse()
        .map_err(|_| ConfigError::new(format!("{key} '{v}' is not a number of seconds")))?;
    if !x.is_finite() || x < min || x > max {
        return Err(ConfigError::new(format!(
            "{key} '{v}' is out of range ({min}-{max} s)"
        )));
    }
    Ok(Duration::from_secs_f64(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_config_format() {
        let mut c = Config::new(Role::Client);
        c.load_str("# bridges\nlocalhost 4001\n\n127.0.0.1 4002   # second\n::1 4003\n[::1] 4004 name=v6 bind=::1\n", "client.conf")
            .unwrap();
        assert_eq!(c.paths.len(), 4);
        assert_eq!(c.paths[0].remote(), "localhost:4001");
        assert_eq!(c.paths[2].remote(), "[::1]:4003");
        assert_eq!(c.paths[3].name.as_deref(), Some("v6"));
        assert_eq!(c.paths[3].bind, Some("::1".parse().unwrap()));
    }

    #[test]
    fn settings_lines_and_errors_name_file_and_line() {
        let mut c = Config::new(Role::Client);
        c.load_str(
            "listen = 127.0.0.1:4000\nmode = redundant\nlocalhost 4001\n",
            "a.conf",
        )
        .unwrap();
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:4000"));
        let e = Config::new(Role::Client)
            .load_str("localhost 4001\nlocalhost 99999\n", "b.conf")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "b.conf:2: port '99999' is out of range (1-65535)"
        );
        let e = Config::new(Role::Client)
            .load_str("\n\nlocalhost\n", "c.conf")
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("c.conf:3: path 'localhost' has no port"),
            "{e}"
        );
        let e = Config::new(Role::Client)
            .load_str("bogus = 1\n", "d.conf")
            .unwrap_err();
        assert_eq!(e.to_string(), "d.conf:1: unknown option 'bogus'");
        let e = Config::new(Role::Client)
            .load_str("h 1 color=red\n", "e.conf")
            .unwrap_err();
        assert!(e.to_string().contains("unknown path option 'color'"));
        let e = Config::new(Role::Client)
            .load_str("h abc\n", "f.conf")
            .unwrap_err();
        assert_eq!(e.to_string(), "f.conf:1: port 'abc' is not a number");
    }

    #[test]
    fn keys() {
        let mut c = Config::new(Role::Server);
        let k = Key::generate().unwrap();
        c.set("key", &k.to_base64()).unwrap();
        assert_eq!(c.params.key, Some(k.clone()));
        let e = c.set("key", "short").unwrap_err().to_string();
        assert!(e.contains("44 base64 characters"), "{e}");
        let dir = std::env::temp_dir().join(format!("mpt-key-{}", std::process::id()));
        std::fs::write(&dir, format!("{}\n", k.to_base64())).unwrap();
        let mut c2 = Config::new(Role::Client);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        c2.set("key-file", dir.to_str().unwrap()).unwrap();
        assert_eq!(c2.params.key, Some(k));
        #[cfg(unix)]
        assert!(c2.warnings[0].contains("chmod 600"), "{:?}", c2.warnings);
        std::fs::remove_file(&dir).unwrap();
        assert!(c2
            .set("key-file", "/nonexistent/key")
            .unwrap_err()
            .to_string()
            .contains("/nonexistent/key"));
    }

    /// A key inside a config file others can read is warned about like a key file; a bad
    /// one is refused without its text in the message.
    #[cfg(unix)]
    #[test]
    fn a_key_in_a_config_file() {
        use std::os::unix::fs::PermissionsExt;
        let k = Key::generate().unwrap().to_base64();
        let f = std::env::temp_dir().join(format!("mpt-conf-key-{}", std::process::id()));
        std::fs::write(&f, format!("key = {k}\n")).unwrap();
        for (mode, warned) in [(0o644, true), (0o600, false)] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let mut c = Config::new(Role::Server);
            c.load_file(&f).unwrap();
            assert!(c.params.key.is_some());
            assert_eq!(!c.warnings.is_empty(), warned, "{mode:o}: {:?}", c.warnings);
            assert!(c.warnings.iter().all(|w| !w.contains(&k)));
        }
        let bad = format!("{}!", &k[..43]);
        std::fs::write(&f, format!("key = {bad}\n")).unwrap();
        let e = Config::new(Role::Server)
            .load_file(&f)
            .unwrap_err()
            .to_string();
        assert!(e.contains(":1:") && !e.contains(&bad[..20]), "{e}");
        std::fs::remove_file(&f).unwrap();
    }

    #[test]
    fn addresses() {
        assert_eq!(normalize_listen("4000").unwrap(), "0.0.0.0:4000");
        assert_eq!(normalize_listen("[::1]:4000").unwrap(), "[::1]:4000");
        assert_eq!(normalize_listen("0").unwrap(), "0.0.0.0:0");
        assert_eq!(normalize_listen("[::1]:0").unwrap(), "[::1]:0");
        assert!(normalize_listen("70000").is_err());
        assert!(split_host_port("::1:4000").is_err());
        assert!(split_host_port("host").is_err());
        assert_eq!(
            split_host_port("[fe80::1]:9").unwrap(),
            ("fe80::1".to_string(), 9)
        );
    }

    #[test]
    fn set_checks_role_and_values() {
        let mut s = Config::new(Role::Server);
        s.set("target", "localhost:6666").unwrap();
        assert!(s
            .set("path", "a:1")
            .unwrap_err()
            .to_string()
            .contains("only to the client"));
        assert!(s.set("max-sessions", "0").is_err());
        assert!(s
            .set("window", "100")
            .unwrap_err()
            .to_string()
            .contains("multiple of 64"));
        assert!(s.set("idle-timeout", "nan").is_err());
        s.set("listen", "2000").unwrap();
        s.validate().unwrap();
        let mut c = Config::new(Role::Client);
        c.set("listen", "4000").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("no paths"));
        c.set("path", "localhost 4001 name=a").unwrap();
        c.validate().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn endless_or_binary_files_are_refused_without_reading_them_whole() {
        let mut c = Config::new(Role::Client);
        let e = c.load_file("/dev/zero").unwrap_err().to_string();
        assert!(e.contains("larger than 1024 KiB"), "{e}");
        let e = read_key_file("/dev/zero").unwrap_err().to_string();
        assert!(e.contains("larger than"), "{e}");
    }

    #[test]
    fn path_names_are_printable() {
        let mut c = Config::new(Role::Client);
        let e = c.set("path", "127.0.0.1 9 name=a\u{1b}[31m").unwrap_err();
        assert!(e.message.contains("control characters"), "{e}");
        assert!(c.set("path", "127.0.0.1 9 name=été").is_ok());
    }
}
