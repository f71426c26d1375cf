//! Which paths carry a datagram. Modes other than `redundant` plug in here.

use super::path::PathState;
use super::transmit::PathMask;

/// Scheduling mode of a client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Every datagram on every path that is not down (on all paths if all look down).
    #[default]
    Redundant,
}

impl Mode {
    /// Parses a mode name.
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "redundant" => Ok(Mode::Redundant),
            "failover" | "k-best" | "balance" => Err(format!(
                "mode '{s}' is not available in this version (available: redundant)"
            )),
            _ => Err(format!("unknown mode '{s}' (available: redundant)")),
        }
    }

    /// The mode's name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Redundant => "redundant",
        }
    }
}

/// Picks the paths for each outgoing datagram.
#[derive(Clone, Debug, Default)]
pub struct Scheduler {
    mode: Mode,
}

impl Scheduler {
    /// A scheduler in `mode`.
    pub fn new(mode: Mode) -> Self {
        Scheduler { mode }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Paths for the next datagram, given each path's state (index = path id).
    pub fn select(&mut self, states: impl Iterator<Item = PathState>) -> PathMask {
        match self.mode {
            Mode::Redundant => {
                let mut all: PathMask = 0;
                let mut alive: PathMask = 0;
                for (i, st) in states.enumerate().take(64) {
                    all |= 1 << i;
                    if st != PathState::Down {
                        alive |= 1 << i;
                    }
                }
                if alive != 0 {
                    alive
                } else {
                    all
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use PathState::*;

    #[test]
    fn redundant_skips_down_paths_unless_all_are_down() {
        let mut s = Scheduler::new(Mode::Redundant);
        assert_eq!(s.select([Up, Down, Lossy].into_iter()), 0b101);
        assert_eq!(s.select([Down, Down].into_iter()), 0b11);
        assert_eq!(s.select([].into_iter()), 0);
    }

    #[test]
    fn parse_names() {
        assert_eq!(Mode::parse("redundant"), Ok(Mode::Redundant));
        assert!(Mode::parse("failover")
            .unwrap_err()
            .contains("not available"));
        assert!(Mode::parse("bogus").unwrap_err().contains("bogus"));
    }
}
