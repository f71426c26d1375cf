//! The command line of mpclient and mpserver: usage errors with exit code 2 naming the bad
//! value (and `file:line`), help, version, the seed's `MPTUNNEL_ENCRYPT` switch, `genkey`.
#![cfg(unix)] // signals and process control via libc

mod support;

use support::*;

/// 10. Bad arguments and config files: exit 2 naming the value and where it is.
#[test]
fn cli_errors() {
    let _g = serial();
    let conf = TempFile::new(
        "bad.conf",
        "# bridges\n127.0.0.1 4001\nlocalhost 99999\n127.0.0.1 4003\n",
    );
    let conf_s = conf.path();
    let err = usage_error(CLIENT, &["127.0.0.1:0", conf_s]);
    assert!(err.contains(&format!("{conf_s}:3")), "{err}");
    assert!(err.contains("99999"), "{err}");

    let missing =
        std::env::temp_dir().join(format!("mptunnel-e2e-{}-missing.conf", std::process::id()));
    let missing = missing.to_str().expect("utf-8");
    let err = usage_error(CLIENT, &["127.0.0.1:0", missing]);
    assert!(err.contains(missing), "{err}");

    let err = usage_error(SERVER, &["2000", "localhost", "notaport"]);
    assert!(err.contains("notaport"), "{err}");

    let out = run_briefly(CLIENT, &["--help"]);
    assert!(out.status.success(), "mpclient --help: {}", out.status);
    assert!(String::from_utf8_lossy(&out.stdout).contains("CONFIG_FILE"));
    for bin in [CLIENT, SERVER] {
        let out = run_briefly(bin, &["--version"]);
        assert!(out.status.success(), "{bin} --version: {}", out.status);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(env!("CARGO_PKG_VERSION")),
            "{bin} --version: {text}"
        );
    }
}

/// 17. MPTUNNEL_ENCRYPT=1 without a key is a usage error that says how to make one.
#[test]
fn encrypt_switch_without_key_fails() {
    let _g = serial();
    for var in ["MPTUNNEL_ENCRYPT", "MPTUNNELENCRYPT"] {
        let out = run_briefly_env(SERVER, &["2000", "localhost", "6666"], &[(var, "1")]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}=1 mpserver: {stderr}");
        assert!(stderr.contains("genkey"), "{stderr}");
    }
    let conf = client_conf(&["127.0.0.1:9".parse().expect("addr")]);
    let conf_s = conf.path();
    let out = run_briefly_env(
        CLIENT,
        &["127.0.0.1:0", conf_s],
        &[("MPTUNNEL_ENCRYPT", "1")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "mpclient: {stderr}");
    assert!(stderr.contains("genkey"), "{stderr}");
}

/// 18. `genkey` prints a new key each time; a key file others can read is warned about.
#[test]
fn genkey_prints_a_key() {
    let _g = serial();
    let (a, b) = (genkey(), genkey());
    assert_ne!(a, b, "two runs of genkey printed the same key");
    let out = run_briefly(SERVER, &["genkey"]);
    assert!(out.status.success(), "mpserver genkey: {}", out.status);
    assert_eq!(
        out.stdout.len(),
        45,
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );

    let conf = client_conf(&["127.0.0.1:9".parse().expect("addr")]);
    let conf_s = conf.path();
    let open = key_file(&a, 0o644);
    let open_s = open.path();
    // The switch is satisfied by the key, which is read (and warned about) before listening.
    let mut client = Proc::spawn_env(
        "mpclient",
        CLIENT,
        &["127.0.0.1:0", conf_s, "--key-file", open_s],
        &[("MPTUNNEL_ENCRYPT".into(), "1".into())],
    );
    // The warning names the file; it comes before the tunnel listens.
    client.wait_for_line(": warn: ", 0);
    let warned = client.warnings();
    assert!(warned.iter().any(|w| w.contains(open_s)), "{warned:?}");
    assert!(client.alive(), "{}", client.tail(10));
    client.terminate_cleanly();

    let closed = key_file(&b, 0o600);
    let (mut client, _) = start(
        "mpclient",
        CLIENT,
        &["127.0.0.1:0", conf_s, "--key-file", closed.path()],
    );
    assert_eq!(client.warnings(), Vec::<String>::new(), "a 0600 key file");
    client.terminate_cleanly();
}
