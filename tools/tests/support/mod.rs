//! The harness the tools' tests share: processes, loads, topologies, in-test relays, garbage
//! and the requirements some tests have of the machine.
//!
//! Every tool binds port 0 where it can and reports its address in its `listening on ADDR`
//! line; mpclient and mpserver print their stats as JSON lines (`--stats-json`), which the
//! tests read instead of log text.
#![allow(dead_code, unused_imports)] // each test binary uses a different part of the harness

pub mod garbage;
pub mod load;
pub mod need;
pub mod net;
pub mod proc;
pub mod relay;
pub mod topo;

use std::sync::{Mutex, MutexGuard};

pub use load::{assert_clean, load, lost, num, report_path, summary, Load};
pub use net::{client_conf, free_port, udp_port_bound, wait_roundtrip, TempFile, V4, V6};
pub use proc::{run_briefly, run_briefly_env, start, start_env, usage_error, Proc, STARTUP};
pub use relay::{Relay, RelayKind};
pub use topo::{
    assert_no_path_went_down, genkey, key_file, start_bridge, start_client, start_echo,
    start_server, End, Setup, Topo,
};

pub const CLIENT: &str = env!("CARGO_BIN_EXE_mpclient");
pub const SERVER: &str = env!("CARGO_BIN_EXE_mpserver");
pub const BRIDGE: &str = env!("CARGO_BIN_EXE_mpbridge");
pub const PERF: &str = env!("CARGO_BIN_EXE_mpperf");

static LOCK: Mutex<()> = Mutex::new(());

/// Serializes the tests of one binary, so topologies never compete for the CPU; a failed
/// (poisoned) test does not stop the others.
pub fn serial() -> MutexGuard<'static, ()> {
    lock(&LOCK)
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
