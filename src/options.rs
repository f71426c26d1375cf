//! Every option of an endpoint's configuration, once: its name, the roles it applies to, the
//! kind of value it takes (and so its unit), its default and its help. `Config::set` parses
//! by it; the tools build their long options and `--help` from it; the C header documents
//! it for `mpt_config_set` (a test keeps the two equal); Python converts keyword arguments by
//! its kinds (an `int` of milliseconds where the kind is milliseconds, seconds as `int` or
//! `float` where it is seconds), and `python -m mptunnel` builds its parser from it.
//!
//! A new option is one entry here and one arm in `Config::apply`.

/// Which endpoints an option applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Roles {
    /// mpclient, `mpt_socket_*`, `mptunnel.Client` / `connect`.
    Client,
    /// mpserver, `mpt_listener_*`, `mptunnel.Server` / `listen`.
    Server,
    /// Both.
    Both,
}

impl Roles {
    /// True when the option applies to `role`.
    pub fn includes(self, role: crate::Role) -> bool {
        matches!(
            (self, role),
            (Roles::Both, _)
                | (Roles::Client, crate::Role::Client)
                | (Roles::Server, crate::Role::Server)
        )
    }

    /// `client`, `server` or `both`.
    pub fn name(self) -> &'static str {
        match self {
            Roles::Client => "client",
            Roles::Server => "server",
            Roles::Both => "both",
        }
    }
}

/// What an option's value is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// Whole milliseconds (an optional `ms` suffix is accepted).
    Millis { min: u64, max: u64 },
    /// Seconds, fractions allowed (an optional `s` suffix is accepted); 0 may mean "never"
    /// where the help says so.
    Seconds { min: f64, max: f64 },
    /// A whole number.
    Count { min: u64, max: u64 },
    /// Where to listen: `PORT`, `HOST:PORT` or `[IPv6]:PORT` (port 0: any free port).
    Listen,
    /// `HOST:PORT` or `[IPv6]:PORT`.
    HostPort,
    /// A path: `HOST:PORT` or `HOST PORT`, then optional `name=`, `bind=`, `dev=`,
    /// `weight=`. Each setting adds one path.
    Path,
    /// A file name.
    File,
    /// A pre-shared key: 44 base64 characters. Never shown in messages.
    Key,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// A log level: `error`, `warn`, `info`, `debug`, `trace`, `off` (or 1-5, 0).
    LogLevel,
    /// `true` or `false` (on the command line: present or not).
    Flag,
}

impl Kind {
    /// The kind's name, as the C and Python documentation and `python -m mptunnel` use it:
    /// `ms`, `seconds`, `count`, `listen`, `host:port`, `path`, `file`, `key`, `choice`,
    /// `log-level`, `flag`.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Millis { .. } => "ms",
            Kind::Seconds { .. } => "seconds",
            Kind::Count { .. } => "count",
            Kind::Listen => "listen",
            Kind::HostPort => "host:port",
            Kind::Path => "path",
            Kind::File => "file",
            Kind::Key => "key",
            Kind::Choice(_) => "choice",
            Kind::LogLevel => "log-level",
            Kind::Flag => "flag",
        }
    }
}

/// One option.
#[derive(Clone, Copy, Debug)]
pub struct OptionSpec {
    /// The long name (`probe-interval`): `--probe-interval` on the command line, a
    /// `probe-interval = ...` line in a file, the key of `mpt_config_set`, and
    /// `probe_interval=` in Python.
    pub name: &'static str,
    /// Other names accepted for it (the seed's words).
    pub aliases: &'static [&'static str],
    /// The endpoints it applies to.
    pub roles: Roles,
    /// Its value.
    pub kind: Kind,
    /// How the help names the value (`MS`, `HOST:PORT`).
    pub value_name: &'static str,
    /// The value when it is not set, as text, if it has one.
    pub default: Option<&'static str>,
    /// One sentence for `--help` and the API documentation.
    pub help: &'static str,
}

/// The modes `mode` takes in this version.
pub const MODES: &[&str] = &["redundant", "failover", "k-best=K", "balance"];

/// Every option, in the order the tools' `--help` lists them.
pub static OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "listen",
        aliases: &[],
        roles: Roles::Both,
        kind: Kind::Listen,
        value_name: "ADDR",
        default: None,
        help: "Where to listen: local apps send to it (client), bridges send to it (server). \
               HOST:PORT, [IPv6]:PORT, or a bare port: 127.0.0.1 for a client (0.0.0.0:PORT \
               serves a LAN), all IPv4 addresses for a server.",
    },
    OptionSpec {
        name: "target",
        aliases: &["forward"],
        roles: Roles::Server,
        kind: Kind::HostPort,
        value_name: "HOST:PORT",
        default: None,
        help: "The UDP service the datagrams are forwarded to.",
    },
    OptionSpec {
        name: "path",
        aliases: &[],
        roles: Roles::Client,
        kind: Kind::Path,
        value_name: "HOST:PORT",
        default: None,
        help: "Add a path (a bridge, or the server itself); repeatable. Optionally followed \
               by name=NAME, bind=LOCAL_IP, dev=IFACE, weight=N (balance) and backup (data only \
               while every other path is down).",
    },
    OptionSpec {
        name: "config",
        aliases: &[],
        roles: Roles::Both,
        kind: Kind::File,
        value_name: "FILE",
        default: None,
        help: "Read settings (name = value lines) and, for a client, paths (HOST PORT lines) \
               from FILE; the other options override its settings.",
    },
    OptionSpec {
        name: "mode",
        aliases: &[],
        roles: Roles::Client,
        kind: Kind::Choice(MODES),
        value_name: "MODE",
        default: Some("redundant"),
        help: "Scheduling mode: redundant (every datagram on every path that is not down), \
               failover (the best path; the next best too while it is in doubt), k-best=K \
               (the K best paths by RTT and loss) or balance (datagrams spread by measured \
               capacity x weight). The server schedules replies the same way.",
    },
    OptionSpec {
        name: "metrics",
        aliases: &[],
        roles: Roles::Both,
        kind: Kind::Listen,
        value_name: "ADDR",
        default: None,
        help: "Serve /metrics (Prometheus text), /stats (JSON) and a live page (/) over HTTP \
               on ADDR: HOST:PORT, or a bare port for 127.0.0.1 (0.0.0.0:PORT to reach it from \
               elsewhere; anyone who can reach it sees the tunnel's figures).",
    },
    OptionSpec {
        name: "probe-interval",
        aliases: &[],
        roles: Roles::Both,
        kind: Kind::Millis {
            min: 1,
            max: 60_000,
        },
        value_name: "MS",
        default: Some("250"),
        help: "Probe each path this often, in milliseconds.",
    },
    OptionSpec {
        name: "down-after",
        aliases: &[],
        roles: Roles::Both,
        kind: Kind::Millis {
            min: 50,
            max: 600_000,
        },
        value_name: "MS",
        default: Some("1000"),
        help: "A path silent this many milliseconds is down (must exceed probe-interval).",
    },
    OptionSpec {
        name: "idle-timeout",
        aliases: &[],
        roles: Roles::Both,
        kind: Kind::Seconds {
            min: 1.0,
            max: 86_400.0,
        },
        value_name: "SECS",
        default: Some("120"),
        help: "Drop sessions idle this many seconds.",
    },
    OptionSpec {
        name: "max-sessions",
        aliases: &[],
        roles: Roles::Both,
        kind: Kind::Count {
            min: 1,
            max: 1_000_000,
        },
        value_name: "N",
        default: Some("1024"),
        help: "Most sessions held at once; new ones beyond are refused and counted.",
    },
    OptionSpec {
        name: "window",
        aliases: &[],
        roles: Roles::Both,
        kind: Kind::Count {
            min: 64,
            max: 1 << 20,
        },
        value_name: "PACKETS",
        default: Some("8192"),
        help: "Replay/duplicate window per session and direction, in packets (a multiple of \
               64).",
    },
    OptionSpec {
        name: "key",
        aliases: &[],
        roles: Roles::Both,
        kind: Kind::Key,
        value_name: "KEY",
        default: None,
        help: "Encrypt and authenticate with this pre-shared key (44 base64 characters, as \
               genkey prints; the same on both ends).",
    },
    OptionSpec {
        name: "key-file",
        aliases: &[],
        roles: Roles::Both,
        kind: Kind::File,
        value_name: "FILE",
        default: None,
        help: "Read the pre-shared key from FILE (warned about when others can read it).",
    },
    OptionSpec {
        name: "stats-interval",
        aliases: &[],
        roles: Roles::Both,
        kind: Kind::Seconds {
            min: 0.0,
            max: 86_400.0,
        },
        value_name: "SECS",
        default: Some("0"),
        help: "The tools print a stats report this often, in seconds (0: never).",
    },
    OptionSpec {
        name: "stats-json",
        aliases: &[],
        roles: Roles::Both,
        kind: Kind::Flag,
        value_name: "BOOL",
        default: Some("false"),
        help: "The tools print each stats report as one JSON line on stdout (and a last one \
               at exit) instead of text on stderr.",
    },
    OptionSpec {
        name: "log-level",
        aliases: &[],
        roles: Roles::Both,
        kind: Kind::LogLevel,
        value_name: "LEVEL",
        default: Some("warn"),
        help: "Log level: error, warn, info, debug, trace or off.",
    },
];

/// The option named `name` (a long name or an alias; `_` and a leading `--` are accepted
/// for `-` and nothing).
pub fn find(name: &str) -> Option<&'static OptionSpec> {
    let name = name.trim().trim_start_matches("--").replace('_', "-");
    OPTIONS
        .iter()
        .find(|o| o.name == name || o.aliases.contains(&name.as_str()))
}

/// The options that apply to `role`.
pub fn for_role(role: crate::Role) -> impl Iterator<Item = &'static OptionSpec> {
    OPTIONS.iter().filter(move |o| o.roles.includes(role))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for (i, o) in OPTIONS.iter().enumerate() {
            for other in &OPTIONS[i + 1..] {
                assert_ne!(o.name, other.name);
                assert!(!other.aliases.contains(&o.name));
            }
            assert_eq!(find(o.name).map(|f| f.name), Some(o.name));
            assert_eq!(
                find(&o.name.replace('-', "_")).map(|f| f.name),
                Some(o.name)
            );
            assert!(o.help.ends_with('.'), "{}", o.name);
        }
        assert_eq!(find("forward").map(|o| o.name), Some("target"));
        assert!(find("colour").is_none());
    }

    #[test]
    fn every_option_is_settable_with_its_default() {
        for o in OPTIONS {
            let Some(d) = o.default else { continue };
            for role in [crate::Role::Client, crate::Role::Server] {
                if o.roles.includes(role) {
                    let mut c = crate::Config::new(role);
                    c.set(o.name, d)
                        .unwrap_or_else(|e| panic!("{} = {d}: {e}", o.name));
                    assert_eq!(c, {
                        let mut fresh = crate::Config::new(role);
                        fresh.set(o.name, d).unwrap();
                        fresh
                    });
                }
            }
        }
        // The defaults in the table are the defaults in force.
        let c = crate::Config::new(crate::Role::Client);
        let p = &c.params;
        assert_eq!(p.probe_interval.as_millis().to_string(), "250");
        assert_eq!(p.down_after.as_millis().to_string(), "1000");
        assert_eq!(p.idle_timeout.as_secs().to_string(), "120");
        assert_eq!(p.max_sessions.to_string(), "1024");
        assert_eq!(p.window_size.to_string(), "8192");
        for (name, value) in [
            ("probe-interval", "250"),
            ("down-after", "1000"),
            ("idle-timeout", "120"),
            ("max-sessions", "1024"),
            ("window", "8192"),
            ("mode", "redundant"),
        ] {
            assert_eq!(find(name).and_then(|o| o.default), Some(value), "{name}");
            let mut set = crate::Config::new(crate::Role::Client);
            set.set(name, value).unwrap();
            assert_eq!(set, c, "{name} = {value} is the default");
        }
    }
}
