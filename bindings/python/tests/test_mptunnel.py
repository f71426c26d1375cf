"""Tests of the installed mptunnel package (run against the wheel: pip install ./bindings/python)."""

from __future__ import annotations

import errno
import json
import os
import importlib.metadata
import random
import re
import selectors
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

import mptunnel


class Echo:
    """A UDP echo service on loopback, in a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.addr = "127.0.0.1:%d" % self.sock.getsockname()[1]
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop:
            try:
                data, peer = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.sock.sendto(data, peer)

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


class LossyBridge:
    """A relay that drops a fraction of datagrams each way (one upstream socket per client)."""

    def __init__(self, upstream: str, loss: float, seed: int) -> None:
        host, port = upstream.rsplit(":", 1)
        self.up = (host, int(port))
        self.loss = loss
        self.rng = random.Random(seed)
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.addr = "127.0.0.1:%d" % self.front.getsockname()[1]
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.client: Tuple[str, int] | None = None
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        sel = selectors.DefaultSelector()
        sel.register(self.front, selectors.EVENT_READ)
        sel.register(self.back, selectors.EVENT_READ)
        while not self.stop:
            for key, _ in sel.select(0.2):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data, peer = sock.recvfrom(65535)
                except OSError:
                    continue
                if self.rng.random() < self.loss:
                    continue
                try:
                    if sock is self.front:
                        self.client = peer
                        self.back.sendto(data, self.up)
                    elif self.client is not None:
                        self.front.sendto(data, self.client)
                except OSError:
                    pass

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.front.close()
        self.back.close()


@pytest.fixture
def echo() -> Iterator[Echo]:
    e = Echo()
    yield e
    e.close()


def exchange(app: socket.socket, target: str, n: int, gap: float = 0.002) -> List[int]:
    """Sends n numbered datagrams to target, returns the numbers echoed back."""
    host, port = target.rsplit(":", 1)
    got: List[int] = []
    app.settimeout(0.05)
    for i in range(n):
        app.sendto(b"%d hello" % i, (host, int(port)))
        time.sleep(gap)
        try:
            while True:
                data, _ = app.recvfrom(65535)
                got.append(int(data.split()[0]))
        except socket.timeout:
            pass
    deadline = time.time() + 1.0
    while time.time() < deadline:
        try:
            data, _ = app.recvfrom(65535)
            got.append(int(data.split()[0]))
        except socket.timeout:
            pass
    return got


def test_client_server_over_lossy_bridges(echo: Echo) -> None:
    with mptunnel.Server(listen="127.0.0.1:0", target=echo.addr) as server:
        bridges = [LossyBridge(server.address, 0.2, seed) for seed in (1, 2, 3)]
        try:
            with mptunnel.Client(listen="127.0.0.1:0", paths=[b.addr for b in bridges]) as client:
                app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                got = exchange(app, client.address, 300)
                app.close()
                assert len(got) == len(set(got)), "a datagram arrived twice"
                # Round trip over 3 paths at 20 % loss each way: ~1.6 % expected.
                assert len(got) >= 285, len(got)
                stats = client.stats()
                assert stats["role"] == "client" and stats["sessions"] == 1
                assert stats["totals"]["duplicates"] > 0
                assert len(stats["paths"]) == 3
                for p in stats["paths"]:
                    assert {"name", "state", "rtt_ms", "loss_out", "loss_in", "tx_packets"} <= p.keys()
        finally:
            for b in bridges:
                b.close()
    assert not server.running


def test_socket_and_listener_hello_counter() -> None:
    with mptunnel.listen("127.0.0.1:0") as lst, mptunnel.connect([lst.address] * 3) as sock:
        n = 0
        for _ in range(100):
            sock.send(b"%d hello" % n)
            data, peer = lst.recv_from(timeout=5)
            lst.send_to(b"%d hello" % (int(data.split()[0]) + 1), peer)
            n = int(sock.recv(timeout=5).split()[0])
        assert n == 100
        assert lst.stats()["totals"]["duplicates"] >= 200


def test_fileno_works_with_selectors() -> None:
    with mptunnel.listen("127.0.0.1:0") as lst, mptunnel.connect([lst.address]) as sock:
        sel = selectors.DefaultSelector()
        sel.register(sock, selectors.EVENT_READ)
        assert sel.select(0) == []
        sock.send(b"ping")
        data, peer = lst.recv_from(timeout=5)
        lst.send_to(b"pong", peer)
        assert sel.select(5)
        assert sock.recv(timeout=0) == b"pong"


def test_blocking_recv_while_another_thread_sends_then_closes() -> None:
    lst = mptunnel.listen("127.0.0.1:0")
    sock = mptunnel.connect([lst.address])
    results: List[object] = []

    def reader() -> None:
        for item in sock:  # iteration ends when the socket is closed
            results.append(item)

    t = threading.Thread(target=reader)
    t.start()
    sock.send(b"x")
    data, peer = lst.recv_from(timeout=5)
    lst.send_to(b"reply", peer)
    deadline = time.time() + 5
    while not results and time.time() < deadline:
        time.sleep(0.01)
    sock.close()
    t.join(5)
    assert not t.is_alive()
    assert results == [b"reply"]
    sock.close()  # idempotent
    with pytest.raises(mptunnel.Error):
        sock.send(b"after close")
    with pytest.raises(mptunnel.Error):
        sock.recv(timeout=0)
    lst.close()


def test_timeouts() -> None:
    with mptunnel.listen("127.0.0.1:0") as lst:
        t0 = time.time()
        with pytest.raises(TimeoutError):
            lst.recv_from(timeout=0.2)
        assert 0.15 < time.time() - t0 < 2


def test_bad_arguments_raise_config_error() -> None:
    with pytest.raises(mptunnel.ConfigError, match="nope"):
        mptunnel.Client(listen="127.0.0.1:0", paths=["nope"])
    with pytest.raises(ValueError):
        mptunnel.Client(listen="127.0.0.1:0", paths=["h:1"], mode="sideways")
    with pytest.raises(mptunnel.ConfigError, match="bogus"):
        mptunnel.Server(listen="127.0.0.1:0", target="127.0.0.1:9", bogus=1)
    with pytest.raises(mptunnel.ConfigError, match="key") as bad_key:
        mptunnel.connect(["127.0.0.1:9"], key="too-short")
    assert "too-short" not in str(bad_key.value)  # a secret is never echoed
    with pytest.raises(mptunnel.ConfigError, match="no paths"):
        mptunnel.Client(listen="127.0.0.1:0")
    with pytest.raises(mptunnel.ConfigError):
        mptunnel.connect("127.0.0.1:9")  # a string, not a list


def test_os_errors_carry_errno() -> None:
    with mptunnel.listen("127.0.0.1:0") as lst:
        with pytest.raises(OSError) as info:
            mptunnel.listen(lst.address)
        assert info.value.errno == errno.EADDRINUSE


def test_garbage_config_file_names_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "client.conf"
    conf.write_text("# ok\nlocalhost 4001\nlocalhost 99999\n")
    with pytest.raises(mptunnel.ConfigError, match=r"client\.conf:3.*99999"):
        mptunnel.Client(listen="127.0.0.1:0", config=str(conf))


def test_encryption_with_genkey(echo: Echo) -> None:
    key = mptunnel.genkey()
    assert len(key) == 44 and key != mptunnel.genkey()
    with mptunnel.Server(listen="127.0.0.1:0", target=echo.addr, key=key) as server:
        with mptunnel.connect([server.address] * 2, key=key) as sock:
            sock.send(b"secret")
            assert sock.recv(timeout=5) == b"secret"
            assert sock.stats()["encrypted"] is True
        with mptunnel.connect([server.address], key=mptunnel.genkey()) as wrong:
            wrong.send(b"let me in")
            with pytest.raises(TimeoutError):
                wrong.recv(timeout=0.5)
        assert server.stats()["totals"]["auth_failures"] >= 1


def test_stop_is_idempotent_and_thread_safe(echo: Echo) -> None:
    server = mptunnel.Server(listen="127.0.0.1:0", target=echo.addr)
    runner = threading.Thread(target=server.run)
    runner.start()
    time.sleep(0.2)
    assert server.running
    stoppers = [threading.Thread(target=server.stop) for _ in range(4)]
    for s in stoppers:
        s.start()
    for s in stoppers:
        s.join(5)
    runner.join(5)
    assert not runner.is_alive() and not server.running
    server.stop()


def test_module_entry_point(echo: Echo, tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "mptunnel", "client", "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "LISTEN_PORT" in out.stdout, out.stdout
    # Its long options are the option table's, as the tools'.
    names = {o["name"] for o in mptunnel.options()} | {a for o in mptunnel.options() for a in o["aliases"]}
    longs = set(re.findall(r"--([a-z][a-z-]+)", out.stdout)) - {"help"}
    assert longs and longs <= names, longs - names
    out = subprocess.run(
        [sys.executable, "-m", "mptunnel", "server", "2000", "localhost", "notaport"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "notaport" in out.stderr
    # The seed's switch and the key variable are read as by the tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPTUNNEL")}
    out = subprocess.run(
        [sys.executable, "-m", "mptunnel", "server", "127.0.0.1:0", "[::1]", "9"],
        capture_output=True,
        text=True,
        env={**env, "MPTUNNEL_ENCRYPT": "1"},
    )
    assert out.returncode == 2 and "genkey" in out.stderr, out.stderr
    proc = subprocess.Popen(
        [sys.executable, "-m", "mptunnel", "server", "127.0.0.1:0", "[::1]", "9", "--stats-json", "--stats-interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env, "MPTUNNEL_ENCRYPT": "1", "MPTUNNEL_KEY": mptunnel.genkey()},
    )
    try:
        assert proc.stdout is not None
        report = json.loads(proc.stdout.readline())
        assert report["role"] == "server" and report["encrypted"] is True, report
    finally:
        proc.terminate()
        proc.wait(10)


def test_options_table_types_the_keyword_arguments(echo: Echo) -> None:
    table = {o["name"]: o for o in mptunnel.options()}
    assert {"listen", "target", "path", "probe-interval", "idle-timeout", "key"} <= set(table)
    assert table["probe-interval"]["kind"] == "ms" and table["idle-timeout"]["kind"] == "seconds"
    # Every keyword the classes and functions name is an option of the table.
    import inspect

    for fn in (mptunnel.Client.__init__, mptunnel.Server.__init__, mptunnel.connect, mptunnel.listen):
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name == "self":
                continue
            name = {"paths": "path", "address": "listen"}.get(p.name, p.name.replace("_", "-"))
            assert name in table, f"{fn.__qualname__}({p.name}=...) is not in the option table"
    # Milliseconds are an int, seconds an int or a float, counts an int: the same everywhere.
    with mptunnel.Server(listen="127.0.0.1:0", target=echo.addr, probe_interval=100, idle_timeout=1.5) as s:
        assert s.running
    for bad in ({"probe_interval": 1.0}, {"down_after": "1000"}, {"max_sessions": True}, {"idle_timeout": "1"}):
        with pytest.raises(TypeError):
            mptunnel.Server(listen="127.0.0.1:0", target=echo.addr, **bad)
    with pytest.raises(mptunnel.ConfigError, match="colour"):
        mptunnel.Server(listen="127.0.0.1:0", target=echo.addr, colour="blue")
    with pytest.raises(mptunnel.ConfigError, match="only to the client"):
        mptunnel.Server(listen="127.0.0.1:0", target=echo.addr, mode="redundant")


def test_version() -> None:
    # The module reports the version of the Rust crates it was built from (the workspace's
    # Cargo.toml), which is also the version pip installed.
    cargo = (Path(__file__).resolve().parents[3] / "Cargo.toml").read_text()
    section = cargo.split("[workspace.package]", 1)[1]
    match = re.search(r'^version\s*=\s*"([^"]+)"', section, re.MULTILINE)
    assert match is not None, "no version in [workspace.package]"
    assert mptunnel.__version__ == match.group(1)
    assert mptunnel.__version__ == importlib.metadata.version("mptunnel")


def test_dropping_an_endpoint_frees_its_port(echo: Echo) -> None:
    server = mptunnel.Server(listen="127.0.0.1:0", target=echo.addr)
    server.start()
    addr = server.address
    del server
    import gc

    gc.collect()
    # The port is free again: a new listener can bind it.
    with mptunnel.listen(addr) as lst:
        assert lst.address == addr


def test_set_mode_and_reload_on_a_running_client(echo: Echo) -> None:
    with mptunnel.Server(listen="127.0.0.1:0", target=echo.addr) as server:
        paths = [server.address]
        with mptunnel.Client(listen="127.0.0.1:0", paths=paths) as client:
            assert client.stats()["mode"] == "redundant"
            client.set_mode("failover")
            assert client.stats()["mode"] == "failover"
            with pytest.raises(mptunnel.ConfigError, match="sideways"):
                client.set_mode("sideways")
            summary = client.reload(listen="127.0.0.1:0", paths=paths + [f"{server.address} name=again"], mode="k-best=1")
            assert "added again" in summary and "k-best=1" in summary, summary
            names = [p["name"] for p in client.stats()["paths"]]
            assert names == [server.address, "again"], names
            with pytest.raises(mptunnel.ConfigError, match="restart"):
                client.reload(listen="127.0.0.1:1", paths=paths)
            app = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            got = exchange(app, client.address, 50)
            app.close()
            assert sorted(got) == list(range(50))


def _need(module: str, what: str) -> None:
    """Imports `module` or skips, naming what is missing; under CI=true it fails instead."""
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        msg = f"needs {what} (make setup installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)


def _get(url: str) -> Tuple[int, str, str]:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as r:
        return int(r.status), str(r.headers.get("Content-Type", "")), r.read().decode()


class Traffic:
    """An app sending numbered datagrams to the client at about 300/s, reading the echoes."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.to = (host, int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.003)
        self.stop = False
        self.received = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stop:
            self.sock.sendto(b"%d hello" % n, self.to)
            n += 1
            try:
                while True:
                    self.sock.recvfrom(65535)
                    self.received += 1
            except (socket.timeout, BlockingIOError):
                pass

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.sock.close()


def test_metrics_parse_with_prometheus_client(echo: Echo) -> None:
    _need("prometheus_client", "prometheus-client")
    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    with mptunnel.Server(listen="127.0.0.1:0", target=echo.addr, metrics="127.0.0.1:0") as server:
        bridges = [LossyBridge(server.address, loss, seed) for loss, seed in ((0.0, 1), (0.3, 2))]
        try:
            with mptunnel.Client(listen="127.0.0.1:0", paths=[b.addr for b in bridges], metrics="0") as client:
                assert client.metrics_address is not None and client.metrics_address.startswith("127.0.0.1:")
                traffic = Traffic(client.address)
                # A loss figure appears once enough acks came back (a second or two over the
                # lossy bridge): scrape until the lossy path has one, for up to 10 s.
                deadline = time.monotonic() + 10.0
                while True:
                    time.sleep(0.5)
                    status, ctype, text = _get(f"http://{client.metrics_address}/metrics")
                    assert status == 200 and "openmetrics-text" in ctype
                    families = {f.name: f for f in text_string_to_metric_families(text)}  # type: ignore[no-untyped-call]
                    # The family has no series (and is left out) while no path has a figure.
                    measured = families["mptunnel_path_loss_ratio"].samples if "mptunnel_path_loss_ratio" in families else []
                    loss = {(s.labels["remote"], s.labels["direction"]): s.value for s in measured}
                    if (bridges[1].addr, "out") in loss or time.monotonic() > deadline:
                        break
                traffic.close()
                rtt = families["mptunnel_path_rtt_seconds"]
                assert len(rtt.samples) == 2 and all(0 < s.value < 1 for s in rtt.samples)
                assert 0.1 < loss[(bridges[1].addr, "out")] < 0.5, loss
                dropped = {s.labels["reason"]: s.value for s in families["mptunnel_dropped"].samples}
                assert dropped["duplicates"] > 0
                assert families["mptunnel_info"].samples[0].labels["role"] == "client"
                _, _, stats = _get(f"http://{client.metrics_address}/stats")
                assert json.loads(stats)["role"] == "client"
                assert server.metrics_address is not None
                _, _, text = _get(f"http://{server.metrics_address}/metrics")
                families = {f.name: f for f in text_string_to_metric_families(text)}  # type: ignore[no-untyped-call]
                assert families["mptunnel_client_sessions"].samples[0].value >= 1
        finally:
            for b in bridges:
                b.close()


def _artifacts() -> Path:
    d = Path(os.environ.get("MPTUNNEL_ARTIFACTS", "target/artifacts"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def test_live_page_in_a_real_browser(echo: Echo) -> None:
    """Headless Chromium (Debian's, driven by Selenium and chromedriver) opens the live page of
    a running client: the path rows appear, their figures move as traffic flows and one
    bridge degrades, and the page fits a phone's width. Screenshots land in
    target/artifacts."""
    _need("selenium", "selenium")
    import shutil

    chromium = shutil.which("chromium")
    driver_bin = shutil.which("chromedriver")
    if chromium is None or driver_bin is None:
        msg = "needs chromium and chromium-driver (make setup installs them as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opts = Options()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1100,900"):
        opts.add_argument(a)
    with mptunnel.Server(listen="127.0.0.1:0", target=echo.addr) as server:
        bridges = [LossyBridge(server.address, 0.0, seed) for seed in (1, 2, 3)]
        traffic = None
        browser = webdriver.Chrome(service=Service(driver_bin), options=opts)
        try:
            paths = [f"{b.addr} name=bridge{i + 1}" for i, b in enumerate(bridges)]
            with mptunnel.Client(listen="127.0.0.1:0", paths=paths, metrics="127.0.0.1:0") as client:
                traffic = Traffic(client.address)
                browser.get(f"http://{client.metrics_address}/")
                wait = WebDriverWait(browser, 15)
                wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#paths .path")) == 3)

                # Read in the page's own script, in one go: the page re-renders every second
                # (the totals are rebuilt), so elements found by one call may be gone by the next.
                def rows() -> List[Tuple[str, ...]]:
                    got = browser.execute_script(
                        "return Array.from(document.querySelectorAll('#paths .path')).map((r) =>"
                        " ['.name', '.state', '.rtt', '.out', '.in'].map((s) => r.querySelector(s).innerText));"
                    )
                    return [tuple(str(v) for v in r) for r in got]

                def delivered() -> str:
                    return str(
                        browser.execute_script(
                            "const t = Array.from(document.querySelectorAll('#totals .tile'))"
                            ".find((t) => t.innerText.includes('delivered'));"
                            " return t ? t.querySelector('.v').innerText : '';"
                        )
                    )

                wait.until(lambda d: all(r[2] != "–" for r in rows()))
                first, first_delivered = rows(), delivered()
                assert [r[0] for r in first] == ["bridge1", "bridge2", "bridge3"], first
                # bridge3 degrades: within a few seconds the page shows it lossy, and its loss
                # figure climbs as the estimate's window (about 4 s) fills with the new loss.
                bridges[2].loss = 0.5

                def shows_degraded(d: object) -> bool:
                    r = rows()[2]
                    return r[1].lower() == "lossy" and r[3] != "–" and float(r[3].split()[0]) > 20

                wait.until(shows_degraded)
                later = rows()
                assert delivered() != first_delivered
                assert later != first
                browser.save_screenshot(str(_artifacts() / "live-page.png"))
                # Readable on a phone: no sideways scrolling at 390 px.
                browser.set_window_size(390, 844)
                time.sleep(1.2)
                width = browser.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
                assert width[0] <= width[1] + 1, width
                browser.save_screenshot(str(_artifacts() / "live-page-phone.png"))
        finally:
            browser.quit()
            if traffic is not None:
                traffic.close()
            for b in bridges:
                b.close()
