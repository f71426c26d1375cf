//! The command line of mpclient and mpserver as data: the seed's positional arguments, the
//! long options of the [option table](crate::options) and the environment, turned into one
//! `Config`. The tools parse their arguments with clap and call this; `python -m mptunnel`
//! parses with argparse (built from the same table) and calls it too, so the three agree.

use crate::config::{join_host_port, parse_port, Config, Role};

/// What a command line gave.
#[derive(Clone, Debug, Default)]
pub struct CommandLine {
    /// The positional arguments: mpclient `[LISTEN_PORT] [CONFIG_FILE]`, mpserver
    /// `[LISTEN_PORT TARGET_HOST TARGET_PORT]`. A positional is left out when its option
    /// (`--listen`, `--config`, `--target`) is given.
    pub positionals: Vec<String>,
    /// The long options given, `(name, value)`, in the table's names; a flag's value is
    /// `true`.
    pub options: Vec<(String, String)>,
}

impl CommandLine {
    fn given(&self, name: &str) -> bool {
        self.options.iter().any(|(k, _)| k == name)
    }
}

/// Reads the environment variable `name`, for [`build`].
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Builds and validates the configuration of `prog` (`mpclient`, `mpserver`) in `role`:
/// the positionals first, then the config file, then `MPTUNNEL_KEY`, then the options (which
/// override the file and the environment); the seed's `MPTUNNEL_ENCRYPT=1` without a key is
/// an error saying how to make one. Errors name the bad value (and `file:line`).
pub fn build(prog: &str, role: Role, cl: &CommandLine, env: Env) -> Result<Config, String> {
    let mut c = Config::new(role);
    let set = |c: &mut Config, what: &str, k: &str, v: &str| {
        c.set(k, v).map_err(|e| {
            if what.is_empty() {
                format!("--{k}: {e}")
            } else {
                format!("{what}: {e}")
            }
        })
    };
    let p = &cl.positionals;
    match role {
        Role::Client => {
            let mut pos = p.iter();
            if !cl.given("listen") {
                if let Some(l) = pos.next() {
                    set(&mut c, "LISTEN_PORT", "listen", l)?;
                }
            }
            if let Some(f) = pos.next() {
                if cl.given("config") {
                    return Err(format!("config file given twice ('{f}' and --config)"));
                }
                c.load_file(f).map_err(|e| e.to_string())?;
            }
            if let Some(extra) = pos.next() {
                return Err(format!("unexpected argument '{extra}'"));
            }
        }
        Role::Server => {
            let (listen, target) = match (p.len(), cl.given("listen"), cl.given("target")) {
                (0, _, _) => (None, None),
                (1, false, _) => (Some(&p[0]), None),
                (2, true, false) => (None, Some((&p[0], &p[1]))),
                (3, false, false) => (Some(&p[0]), Some((&p[1], &p[2]))),
                _ => {
                    return Err(format!(
                        "unexpected arguments '{}' (expected LISTEN_PORT TARGET_HOST \
                         TARGET_PORT, leaving out what --listen/--target give)",
                        p.join(" ")
                    ))
                }
            };
            if let Some(l) = listen {
                set(&mut c, "LISTEN_PORT", "listen", l)?;
            }
            if let Some((host, port)) = target {
                let port = parse_port(port).map_err(|e| format!("TARGET_PORT: {e}"))?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                set(&mut c, "TARGET_HOST", "target", &join_host_port(host, port))?;
            }
        }
    }
    for (k, v) in cl.options.iter().filter(|(k, _)| k == "config") {
        set(&mut c, "", k, v)?;
    }
    if let Some(v) = env("MPTUNNEL_KEY").filter(|v| !v.trim().is_empty()) {
        c.set("key", &v)
            .map_err(|e| format!("MPTUNNEL_KEY: {}", e.message))?;
    }
    for (k, v) in cl.options.iter().filter(|(k, _)| k != "config") {
        set(&mut c, "", k, v)?;
    }
    check_encrypt_switch(prog, &c, env)?;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// The original tool's switch `MPTUNNEL_ENCRYPT=1` (also spelled `MPTUNNELENCRYPT`)
/// without a key is an error that says how to make one.
fn check_encrypt_switch(prog: &str, c: &Config, env: Env) -> Result<(), String> {
    for var in ["MPTUNNEL_ENCRYPT", "MPTUNNELENCRYPT"] {
        if let Some(v) = env(var) {
            let v = v.trim();
            if !v.is_empty() && v != "0" && c.params.key.is_none() {
                return Err(format!(
                    "{var}={v} asks for encryption, but no key is set. Make one with\n  \
                     {prog} genkey > mptunnel.key && chmod 600 mptunnel.key\n\
                     copy it to the other end, and start both ends with --key-file mptunnel.key \
                     (or MPTUNNEL_KEY=<key>)"
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cl(pos: &[&str], opts: &[(&str, &str)]) -> CommandLine {
        CommandLine {
            positionals: pos.iter().map(|s| s.to_string()).collect(),
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn seed_forms() {
        let s = build(
            "mpserver",
            Role::Server,
            &cl(&["2000", "[::1]", "6666"], &[]),
            &no_env,
        )
        .unwrap();
        assert_eq!(s.listen.as_deref(), Some("0.0.0.0:2000"));
        assert_eq!(s.target.as_deref(), Some("[::1]:6666"));
        let s = build(
            "mpserver",
            Role::Server,
            &cl(&["localhost", "6666"], &[("listen", "127.0.0.1:0")]),
            &no_env,
        )
        .unwrap();
        assert_eq!(s.target.as_deref(), Some("localhost:6666"));
        let e = build("mpserver", Role::Server, &cl(&["1", "2"], &[]), &no_env).unwrap_err();
        assert!(e.contains("unexpected arguments '1 2'"), "{e}");
        let e = build(
            "mpserver",
            Role::Server,
            &cl(&["2000", "h", "notaport"], &[]),
            &no_env,
        )
        .unwrap_err();
        assert!(
            e.starts_with("TARGET_PORT:") && e.contains("notaport"),
            "{e}"
        );
        let c = build(
            "mpclient",
            Role::Client,
            &cl(
                &["4000"],
                &[("path", "[::1]:4001"), ("probe-interval", "100")],
            ),
            &no_env,
        )
        .unwrap();
        // A client's bare port is this host's apps only.
        assert_eq!(c.listen.as_deref(), Some("127.0.0.1:4000"));
        assert_eq!(c.paths.len(), 1);
        assert_eq!(c.params.probe_interval.as_millis(), 100);
    }

    #[test]
    fn environment_and_errors() {
        let key = crate::genkey().unwrap();
        let env = |k: &str| (k == "MPTUNNEL_KEY").then(|| key.clone());
        let c = build(
            "mpclient",
            Role::Client,
            &cl(&["127.0.0.1:0"], &[("path", "127.0.0.1:9")]),
            &env,
        )
        .unwrap();
        assert!(c.params.key.is_some());
        let encrypt = |k: &str| (k == "MPTUNNEL_ENCRYPT").then(|| "1".to_string());
        let e = build(
            "mpclient",
            Role::Client,
            &cl(&["127.0.0.1:0"], &[("path", "127.0.0.1:9")]),
            &encrypt,
        )
        .unwrap_err();
        assert!(e.contains("mpclient genkey"), "{e}");
        let e = build(
            "mpclient",
            Role::Client,
            &cl(&["127.0.0.1:0"], &[("probe-interval", "fast")]),
            &no_env,
        )
        .unwrap_err();
        assert!(
            e.starts_with("--probe-interval") && e.contains("fast"),
            "{e}"
        );
        let bad_key = |k: &str| (k == "MPTUNNEL_KEY").then(|| "secret-but-short".to_string());
        let e = build("mpclient", Role::Client, &cl(&[], &[]), &bad_key).unwrap_err();
        assert!(
            e.starts_with("MPTUNNEL_KEY") && !e.contains("secret"),
            "{e}"
        );
    }
}
