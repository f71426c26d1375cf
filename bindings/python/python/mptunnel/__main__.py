"""``python -m mptunnel client|server|bridge ...``: the CLI tools, from Python.

    python -m mptunnel server 2000 localhost 6666
    python -m mptunnel client 4000 client.conf
    python -m mptunnel bridge 4001 localhost:2000
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from . import Client, ConfigError, Error, Server, __version__


def _listen(value: str) -> str:
    return f"0.0.0.0:{value}" if value.isdigit() else value


def _split(addr: str) -> Tuple[str, int]:
    host, _, port = addr.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"address {addr!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--key-file", help="pre-shared key file (see `mpclient genkey`)")
    p.add_argument("--stats-interval", type=float, default=0, help="print stats every SECS")
    p.add_argument("--idle-timeout", help="drop sessions idle this many seconds")
    p.add_argument("--max-sessions", help="session cap")


def _run(endpoint: "Client | Server", every: float) -> None:
    endpoint.start()
    try:
        while endpoint.running:
            time.sleep(every or 0.2)
            if every:
                print(endpoint.stats(), file=sys.stderr)
    except KeyboardInterrupt:
        pass
    finally:
        endpoint.stop()


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
    c = sub.add_parser("client", help="mpclient: LISTEN_PORT CONFIG_FILE")
    c.add_argument("listen_port", nargs="?")
    c.add_argument("config_file", nargs="?")
    c.add_argument("--listen")
    c.add_argument("--path", action="append", default=[])
    c.add_argument("--mode")
    _common(c)
    s = sub.add_parser("server", help="mpserver: LISTEN_PORT TARGET_HOST TARGET_PORT")
    s.add_argument("positionals", nargs="*")
    s.add_argument("--listen")
    s.add_argument("--target")
    _common(s)
    b = sub.add_parser("bridge", help="a plain UDP relay: LISTEN UPSTREAM")
    b.add_argument("listen")
    b.add_argument("upstream")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "bridge":
            _bridge(a.listen, a.upstream)
            return 0
        extra = {"key_file": a.key_file, "idle_timeout": a.idle_timeout, "max_sessions": a.max_sessions}
        if a.cmd == "client":
            listen = a.listen or (_listen(a.listen_port) if a.listen_port else None)
            if listen is None:
                raise ConfigError("no listen address (LISTEN_PORT or --listen)")
            conf = a.config_file if a.listen is None else (a.config_file or a.listen_port)
            ep: "Client | Server" = Client(listen=listen, paths=a.path, mode=a.mode, config=conf, **extra)
        else:
            pos: List[str] = a.positionals
            listen = a.listen or (_listen(pos[0]) if pos else None)
            target = a.target
            rest = pos[1:] if a.listen is None else pos
            if target is None and len(rest) == 2:
                target = f"{rest[0]}:{rest[1]}"
            ep = Server(listen=listen or "0.0.0.0:0", target=target, **extra)
        _run(ep, a.stats_interval)
    except (ConfigError, Error, OSError) as e:
        print(f"mptunnel: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
