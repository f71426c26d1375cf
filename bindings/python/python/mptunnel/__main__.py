"""``python -m mptunnel client|server|bridge ...``: the CLI tools, from Python.

    python -m mptunnel server 2000 localhost 6666
    python -m mptunnel client 4000 client.conf
    python -m mptunnel bridge 4001 localhost:2000

``client`` and ``server`` take the same arguments as ``mpclient`` and ``mpserver``: their
long options come from the option table (:func:`mptunnel.options`), and the command line is
read by the same code as the tools' (positionals, config file, ``MPTUNNEL_KEY``).
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from . import ConfigError, Error, __version__, _native, options

_POSITIONALS = {
    "client": ("[LISTEN_PORT] [CONFIG_FILE]", "mpclient"),
    "server": ("[LISTEN_PORT TARGET_HOST TARGET_PORT]", "mpserver"),
}


def _listen(value: str) -> str:
    return f"0.0.0.0:{value}" if value.isdigit() else value


def _split(addr: str) -> Tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"address {addr!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _add_table_options(p: argparse.ArgumentParser, role: str) -> None:
    """The role's long options from the table (a key on a command line can be read by other
    users: --key-file or MPTUNNEL_KEY instead, as with the tools)."""
    for o in options():
        if o["roles"] not in (role, "both") or o["kind"] == "key":
            continue
        names = [f"--{o['name']}", *(f"--{a}" for a in o["aliases"])]
        helptext = o["help"] + (f" [default: {o['default']}]" if o["default"] and o["kind"] != "flag" else "")
        if o["kind"] == "flag":
            p.add_argument(*names, dest=o["name"], action="store_true", default=None, help=helptext)
        elif o["kind"] == "path":
            p.add_argument(*names, dest=o["name"], action="append", metavar=o["value_name"], help=helptext)
        else:
            p.add_argument(*names, dest=o["name"], metavar=o["value_name"], help=helptext)


def _run(endpoint: _native.NativeTunnel, every: float, as_json: bool) -> None:
    endpoint.start()
    try:
        next_report = time.monotonic() + every if every else None
        while endpoint.is_running():
            time.sleep(0.05 if next_report is None else max(0.0, min(0.05, next_report - time.monotonic())))
            if next_report is not None and time.monotonic() >= next_report:
                next_report += every
                if as_json:
                    print(endpoint.stats_json(), flush=True)
                else:
                    print(endpoint.stats_text(), file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        endpoint.stop()
        if as_json:
            print(endpoint.stats_json(), flush=True)


def _bridge(listen: str, upstream: str) -> None:
    """A plain relay: one upstream socket per client address (like mpbridge, no impairments)."""
    lhost, lport = _split(_listen(listen))
    up = socket.getaddrinfo(*_split(upstream), type=socket.SOCK_DGRAM)[0][4]
    front = socket.socket(socket.AF_INET6 if ":" in lhost else socket.AF_INET, socket.SOCK_DGRAM)
    front.bind((lhost, lport))
    sel = selectors.DefaultSelector()
    sel.register(front, selectors.EVENT_READ, None)
    backs: Dict[Tuple[str, int], socket.socket] = {}
    try:
        while True:
            for key, _ in sel.select():
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data, addr = sock.recvfrom(65535)
                except OSError:
                    continue
                if key.data is None:
                    back = backs.get(addr)
                    if back is None:
                        back = socket.socket(socket.AF_INET6 if len(up) == 4 else socket.AF_INET, socket.SOCK_DGRAM)
                        backs[addr] = back
                        sel.register(back, selectors.EVENT_READ, addr)
                    try:
                        back.sendto(data, up)
                    except OSError:
                        pass
                else:
                    try:
                        front.sendto(data, key.data)
                    except OSError:
                        pass
    except KeyboardInterrupt:
        pass


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mptunnel", description="Multipath UDP tunnel")
    ap.add_argument("--version", action="version", version=__version__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for role, (usage, tool) in _POSITIONALS.items():
        p = sub.add_parser(role, help=f"{tool}: {usage}")
        p.add_argument("positionals", nargs="*", metavar="ARG", help=f"{usage}, as {tool} takes them")
        _add_table_options(p, role)
    b = sub.add_parser("bridge", help="a plain UDP relay: LISTEN UPSTREAM")
    b.add_argument("listen")
    b.add_argument("upstream")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "bridge":
            _bridge(a.listen, a.upstream)
            return 0
        given: List[Tuple[str, str]] = []
        for o in options():
            value = getattr(a, o["name"], None)
            if value is None:
                continue
            if o["kind"] == "path":
                given.extend((o["name"], v) for v in value)
            elif o["kind"] == "flag":
                given.append((o["name"], "true"))
            else:
                given.append((o["name"], value))
        ep = _native.NativeTunnel.from_command_line(a.cmd, list(a.positionals), given)
        every = float(a.__dict__.get("stats-interval") or 0)
        _run(ep, every, bool(a.__dict__.get("stats-json")))
    except (ConfigError, Error, OSError) as e:
        print(f"mptunnel: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
