//! The long options of mpclient and mpserver, built from the core's option table
//! (`mptunnel::options`): name, value name, help and default come from there, so the tools,
//! the config files, the C API and Python take the same options.

use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use mptunnel::options::{for_role, Kind, OptionSpec};
use mptunnel::Role;

/// The table's options for mpclient (`SERVER` false) or mpserver (`SERVER` true), as given.
#[derive(Clone, Debug, Default)]
pub struct TableOpts<const SERVER: bool> {
    /// `(name, value)` of every option given, in the table's order (`true` for a flag).
    pub given: Vec<(String, String)>,
}

fn role(server: bool) -> Role {
    if server {
        Role::Server
    } else {
        Role::Client
    }
}

/// The options a command line offers: all of the role's, but `key` (a key on a command line
/// can be read by other users in the process list: `--key-file` or `MPTUNNEL_KEY` instead).
pub fn offered(role: Role) -> impl Iterator<Item = &'static OptionSpec> {
    for_role(role).filter(|o| o.kind != Kind::Key)
}

fn arg(o: &'static OptionSpec) -> Arg {
    let mut help = o.help.to_string();
    match o.default {
        Some(d) if o.kind != Kind::Flag => help.push_str(&format!(" [default: {d}]")),
        _ => {}
    }
    let arg = Arg::new(o.name).long(o.name).help(help).aliases(o.aliases);
    match o.kind {
        Kind::Flag => arg.action(ArgAction::SetTrue),
        Kind::Path => arg.value_name(o.value_name).action(ArgAction::Append),
        _ => arg.value_name(o.value_name).action(ArgAction::Set),
    }
}

impl<const SERVER: bool> Args for TableOpts<SERVER> {
    fn augment_args(cmd: Command) -> Command {
        offered(role(SERVER)).fold(cmd, |cmd, o| cmd.arg(arg(o)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl<const SERVER: bool> FromArgMatches for TableOpts<SERVER> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Vec::new();
        for o in offered(role(SERVER)) {
            if o.kind == Kind::Flag {
                if m.get_flag(o.name) {
                    given.push((o.name.to_string(), "true".to_string()));
                }
            } else if let Some(values) = m.get_many::<String>(o.name) {
                given.extend(values.map(|v| (o.name.to_string(), v.clone())));
            }
        }
        Ok(TableOpts { given })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        positionals: Vec<String>,
        #[command(flatten)]
        opts: TableOpts<false>,
    }

    #[test]
    fn every_offered_option_parses_and_keeps_its_order() {
        let cli = Cli::try_parse_from([
            "mpclient",
            "4000",
            "--path",
            "a:1",
            "--probe-interval",
            "100",
            "--path",
            "b:2",
            "--stats-json",
        ])
        .unwrap();
        assert_eq!(cli.positionals, ["4000"]);
        let names: Vec<&str> = cli.opts.given.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["path", "path", "probe-interval", "stats-json"]);
        assert!(Cli::try_parse_from(["mpclient", "--target", "x:1"]).is_err());
        assert!(Cli::try_parse_from(["mpclient", "--key", "k"]).is_err());
    }
}
