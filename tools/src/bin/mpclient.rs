//! mpclient: listens for local UDP apps and sends every datagram over all paths to mpserver.

use std::process::ExitCode;

use clap::Parser;
use mptunnel::Role;
use mptunnel_tools::options::TableOpts;
use mptunnel_tools::{config_from, init_logging_from, maybe_genkey, reread_config, run_tunnel};

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
    after_help = "Encryption: `mpclient genkey > mptunnel.key`, then --key-file mptunnel.key on both ends \
                  (or MPTUNNEL_KEY=<key>).\n\nExamples:\n  mpclient 4000 client.conf\n  \
                  mpclient --listen 127.0.0.1:4000 client.conf\n  \
                  mpclient --listen [::1]:4000 --path 10.0.0.2:4001 --path 10.0.0.3:4001"
)]
struct Args {
    /// LISTEN_PORT (all IPv4 addresses) or HOST:PORT, then CONFIG_FILE.
    #[arg(value_name = "LISTEN_PORT] [CONFIG_FILE", num_args = 0..=2)]
    positionals: Vec<String>,
    #[command(flatten)]
    options: TableOpts<false>,
}

fn main() -> ExitCode {
    if let Some(code) = maybe_genkey() {
        return code;
    }
    let args = Args::parse();
    let (positionals, options) = (args.positionals, args.options.given);
    let config = match config_from(
        "mpclient",
        Role::Client,
        positionals.clone(),
        options.clone(),
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging_from("mpclient", &config);
    // SIGHUP reads the same command line (and so the config file) again.
    let reread = || reread_config("mpclient", Role::Client, &positionals, &options);
    run_tunnel("mpclient", &config, &reread)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every long option this tool offers is one of the option table's.
    #[test]
    fn every_long_option_is_in_the_table() {
        let cmd = Args::command();
        let longs: Vec<&str> = cmd.get_arguments().filter_map(|a| a.get_long()).collect();
        assert!(longs.len() > 8, "{longs:?}");
        for long in longs {
            let spec = mptunnel::options::find(long)
                .unwrap_or_else(|| panic!("--{long} is not in mptunnel::options::OPTIONS"));
            assert!(spec.roles.includes(Role::Client), "--{long}");
        }
    }
}
