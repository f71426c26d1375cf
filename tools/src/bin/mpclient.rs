//! mpclient: listens for local UDP apps and sends every datagram over all paths to mpserver.

use std::process::ExitCode;

use clap::Parser;
use mptunnel::{Config, Role};
use mptunnel_tools::{
    apply_key_env, check_encrypt_switch, init_logging_from, maybe_genkey, run_tunnel, CommonOpts,
    EXIT_USAGE,
};

/// Multipath UDP tunnel, client side.
///
/// Listens on LISTEN_PORT for local UDP applications and sends every datagram over every
/// path (bridge) listed in CONFIG_FILE to mpserver, which keeps the first copy to arrive.
/// Replies come back the same way. Each local application address is its own session.
///
/// CONFIG_FILE has one bridge per line as `HOST PORT` (optionally followed by
/// `bind=ADDR dev=IFACE name=NAME`), `#` comments, and `name = value` settings using the
/// long option names (e.g. `mode = redundant`).
#[derive(Parser, Debug)]
#[command(
    name = "mpclient",
    version,
    after_help = "Encryption: `mpclient genkey > mptunnel.key`, then --key-file mptunnel.key on both ends.\n\nExamples:\n  mpclient 4000 client.conf\n  mpclient --listen 127.0.0.1:4000 client.conf\n  \
                  mpclient --listen [::1]:4000 --path 10.0.0.2:4001 --path 10.0.0.3:4001"
)]
struct Args {
    /// LISTEN_PORT (all IPv4 addresses) or HOST:PORT, then CONFIG_FILE.
    #[arg(value_name = "LISTEN_PORT] [CONFIG_FILE", num_args = 0..=2)]
    positionals: Vec<String>,
    /// Address for local apps to send to (HOST:PORT, [IPv6]:PORT, or a bare port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Config file with the paths (one `HOST PORT` per line).
    #[arg(long, value_name = "FILE")]
    config: Option<String>,
    /// Add a path (bridge) HOST:PORT; may be repeated.
    #[arg(long = "path", value_name = "HOST:PORT")]
    paths: Vec<String>,
    /// Scheduling mode: redundant (every datagram on every path that is up).
    #[arg(long, value_name = "MODE")]
    mode: Option<String>,
    #[command(flatten)]
    common: CommonOpts,
}

fn build(args: &Args) -> Result<Config, String> {
    let mut c = Config::new(Role::Client);
    let mut pos = args.positionals.iter();
    let mut config_file = args.config.clone();
    if args.listen.is_none() {
        if let Some(p) = pos.next() {
            c.set("listen", p)
                .map_err(|e| format!("LISTEN_PORT: {e}"))?;
        }
    }
    if let Some(f) = pos.next() {
        if config_file.is_some() {
            return Err(format!("config file given twice ('{f}' and --config)"));
        }
        config_file = Some(f.clone());
    }
    if let Some(extra) = pos.next() {
        return Err(format!("unexpected argument '{extra}'"));
    }
    if let Some(f) = &config_file {
        c.load_file(f).map_err(|e| e.to_string())?;
    }
    if let Some(l) = &args.listen {
        c.set("listen", l).map_err(|e| format!("--listen: {e}"))?;
    }
    for p in &args.paths {
        c.set("path", p).map_err(|e| format!("--path: {e}"))?;
    }
    if let Some(m) = &args.mode {
        c.set("mode", m).map_err(|e| format!("--mode: {e}"))?;
    }
    apply_key_env(&mut c)?;
    args.common.apply(&mut c).map_err(|e| e.to_string())?;
    check_encrypt_switch("mpclient", &c)?;
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
            eprintln!("mpclient: {e}\nTry 'mpclient --help' for more information.");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging_from("mpclient", &config);
    run_tunnel("mpclient", &config, args.common.stats_format())
}
