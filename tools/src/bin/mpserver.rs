//! mpserver: receives the copies from every bridge, keeps the first, forwards to the target.

use std::process::ExitCode;

use clap::Parser;
use mptunnel::{Config, Role};
use mptunnel_tools::{
    apply_key_env, check_encrypt_switch, init_logging_from, maybe_genkey, run_tunnel, CommonOpts,
    EXIT_USAGE,
};

/// Multipath UDP tunnel, server side.
///
/// Listens on LISTEN_PORT for packets from the bridges, keeps the first copy of each
/// datagram and forwards it to TARGET_HOST:TARGET_PORT from a socket of its own per client
/// session; replies go back over every path the session uses. Either side may restart on
/// its own: the tunnel resumes at once.
#[derive(Parser, Debug)]
#[command(
    name = "mpserver",
    version,
    after_help = "Encryption: `mpserver genkey > mptunnel.key`, then --key-file mptunnel.key on both ends.\n\nExamples:\n  mpserver 2000 localhost 6666\n  mpserver --listen 0.0.0.0:2000 --target 127.0.0.1:6666\n  \
                  mpserver --listen [::]:2000 --target [::1]:6666"
)]
struct Args {
    /// LISTEN_PORT (or HOST:PORT), TARGET_HOST and TARGET_PORT.
    #[arg(value_name = "LISTEN_PORT] [TARGET_HOST TARGET_PORT", num_args = 0..=3)]
    positionals: Vec<String>,
    /// Address for the bridges to send to (HOST:PORT, [IPv6]:PORT, or a bare port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Where to forward the datagrams (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT")]
    target: Option<String>,
    /// Config file of `name = value` settings (long option names).
    #[arg(long, value_name = "FILE")]
    config: Option<String>,
    #[command(flatten)]
    common: CommonOpts,
}

fn build(args: &Args) -> Result<Config, String> {
    let mut c = Config::new(Role::Server);
    if let Some(f) = &args.config {
        c.load_file(f).map_err(|e| e.to_string())?;
    }
    let p = &args.positionals;
    let (listen, target) = match (p.len(), args.listen.is_some(), args.target.is_some()) {
        (0, _, _) => (None, None),
        (1, false, _) => (Some(p[0].clone()), None),
        (2, true, false) => (None, Some((p[0].clone(), p[1].clone()))),
        (3, false, false) => (Some(p[0].clone()), Some((p[1].clone(), p[2].clone()))),
        _ => {
            return Err(format!(
                "unexpected arguments '{}' (expected LISTEN_PORT TARGET_HOST TARGET_PORT, \
                 leaving out what --listen/--target give)",
                p.join(" ")
            ))
        }
    };
    if let Some(l) = listen {
        c.set("listen", &l)
            .map_err(|e| format!("LISTEN_PORT: {e}"))?;
    }
    if let Some((host, port)) = target {
        let port = mptunnel::config::parse_port(&port).map_err(|e| format!("TARGET_PORT: {e}"))?;
        let joined = mptunnel::config::join_host_port(
            host.trim_start_matches('[').trim_end_matches(']'),
            port,
        );
        c.set("target", &joined)
            .map_err(|e| format!("TARGET_HOST: {e}"))?;
    }
    if let Some(l) = &args.listen {
        c.set("listen", l).map_err(|e| format!("--listen: {e}"))?;
    }
    if let Some(t) = &args.target {
        c.set("target", t).map_err(|e| format!("--target: {e}"))?;
    }
    apply_key_env(&mut c)?;
    args.common.apply(&mut c).map_err(|e| e.to_string())?;
    check_encrypt_switch("mpserver", &c)?;
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

fn main() -> ExitCode {
    if let Some(code) = maybe_genkey() {
        return code;
    }
    let args = Args::parse();
    let config = match build(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mpserver: {e}\nTry 'mpserver --help' for more information.");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging_from("mpserver", &config);
    run_tunnel("mpserver", &config, args.common.stats_format())
}
