//! `mpperf load --json` runs and their reports.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use serde_json::Value;

use super::PERF;

/// A running `mpperf load --json`; killed if dropped before [`Load::finish`].
pub struct Load {
    child: Option<Child>,
    what: String,
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Load {
    pub fn spawn(target: SocketAddr, args: &[&str]) -> Load {
        let what = format!("mpperf load --target {target} {}", args.join(" "));
        let child = Command::new(PERF)
            .args(["load", "--json", "--target", &target.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Load {
            child: Some(child),
            what,
        }
    }

    pub fn finish(mut self) -> Value {
        let child = self.child.take().expect("finish once");
        let out = child.wait_with_output().expect("wait for mpperf load");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{} failed: {stderr}", self.what);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{}: bad JSON ({e}): {}",
                self.what,
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }
}

pub fn load(target: SocketAddr, args: &[&str]) -> Value {
    Load::spawn(target, args).finish()
}

/// A number in a JSON document; `key` may be a path (`totals.malformed`).
pub fn num(v: &Value, key: &str) -> f64 {
    key.split('.')
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

/// The path of a stats report whose `key` (`name`, `remote`) is `value`.
pub fn report_path<'a>(report: &'a Value, key: &str, value: &str) -> &'a Value {
    report["paths"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p[key] == value))
        .unwrap_or_else(|| panic!("no path with {key} {value} in {report}"))
}

/// Datagrams that did not come back, counting sends refused while nothing listened.
pub fn lost(v: &Value) -> f64 {
    num(v, "sent") + num(v, "send_errors") - num(v, "received")
}

pub fn summary(label: &str, r: &Value) -> String {
    let rtt = &r["rtt_ms"];
    let ms = |k: &str| rtt[k].as_f64().map_or("-".into(), |x| format!("{x:.3}"));
    format!(
        "{label:<8} sent {} (+{} refused) received {} dup {} corrupt {} foreign {} loss {:.3}% \
         rtt ms p50 {} p99 {} max {}",
        r["sent"],
        r["send_errors"],
        r["received"],
        r["duplicates"],
        r["corrupt"],
        r["foreign"],
        num(r, "loss_pct"),
        ms("p50"),
        ms("p99"),
        ms("max"),
    )
}

/// No duplicate, no corrupt and no foreign datagram reached the app.
pub fn assert_clean(r: &Value, ctx: &dyn Fn() -> String) {
    for key in ["duplicates", "corrupt", "foreign"] {
        assert_eq!(num(r, key), 0.0, "{key} in {r}\n{}", ctx());
    }
}
