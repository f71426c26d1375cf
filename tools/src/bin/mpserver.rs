//! mpserver: receives the copies from every bridge, keeps the first, forwards to the target.

use std::process::ExitCode;

use clap::Parser;
use mptunnel::Role;
use mptunnel_tools::options::TableOpts;
use mptunnel_tools::{config_from, init_logging_from, maybe_genkey, reread_config, run_tunnel};

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
    after_help = "Encryption: `mpserver genkey > mptunnel.key`, then --key-file mptunnel.key on both ends \
                  (or MPTUNNEL_KEY=<key>).\n\nExamples:\n  mpserver 2000 localhost 6666\n  \
                  mpserver --listen 0.0.0.0:2000 --target 127.0.0.1:6666\n  \
                  mpserver --listen [::]:2000 --target [::1]:6666"
)]
struct Args {
    /// LISTEN_PORT (or HOST:PORT), TARGET_HOST and TARGET_PORT.
    #[arg(value_name = "LISTEN_PORT] [TARGET_HOST TARGET_PORT", num_args = 0..=3)]
    positionals: Vec<String>,
    #[command(flatten)]
    options: TableOpts<true>,
}

fn main() -> ExitCode {
    if let Some(code) = maybe_genkey() {
        return code;
    }
    let args = Args::parse();
    let (positionals, options) = (args.positionals, args.options.given);
    let config = match config_from(
        "mpserver",
        Role::Server,
        positionals.clone(),
        options.clone(),
    ) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging_from("mpserver", &config);
    // SIGHUP reads the same command line (and so the config file) again.
    let reread = || reread_config("mpserver", Role::Server, &positionals, &options);
    run_tunnel("mpserver", &config, &reread)
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
            assert!(spec.roles.includes(Role::Server), "--{long}");
        }
    }
}
