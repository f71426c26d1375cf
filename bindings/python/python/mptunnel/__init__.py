"""mptunnel: a multipath UDP tunnel.

Every datagram goes over several paths (bridges) at once and the receiver keeps the first copy,
so a lossy link becomes a steady one. This package runs the same endpoints as the ``mpclient``
and ``mpserver`` tools, in process:

* :class:`Client` / :class:`Server` forward UDP between a local port and the tunnel;
* :func:`connect` / :func:`listen` exchange datagrams over the tunnel directly
  (:class:`Socket` / :class:`Listener`), with no local UDP hop.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple


class Error(Exception):
    """Base class of every error this package raises."""


class ConfigError(Error, ValueError):
    """A bad option or value; the message names it."""


from . import _native  # noqa: E402  (the exception classes must exist first)

__version__: str = _native.VERSION

__all__ = [
    "Client",
    "ConfigError",
    "Error",
    "Listener",
    "Server",
    "Socket",
    "connect",
    "genkey",
    "listen",
    "options",
    "__version__",
]


def genkey() -> str:
    """Return a new random pre-shared key (44 base64 characters)."""
    return _native.genkey()


def options() -> List[Dict[str, Any]]:
    """The options every endpoint takes, as the tools, config files and the C API know them:
    dicts with ``name`` (``probe-interval``; as a keyword argument ``probe_interval``),
    ``aliases``, ``roles`` (``client``, ``server`` or ``both``), ``kind``, ``value_name``,
    ``default`` and ``help``. The kind says the Python type a keyword argument takes:
    ``ms`` an ``int`` of milliseconds, ``seconds`` an ``int`` or ``float`` of seconds,
    ``count`` an ``int``, ``flag`` a ``bool``, ``file`` a ``str`` or path, ``path`` (the
    ``paths`` argument) a list of ``"HOST:PORT"`` strings, and the others a ``str``."""
    return [dict(o) for o in _OPTIONS]


_OPTIONS: List[Dict[str, Any]] = json.loads(_native.options_json())
_BY_NAME: Dict[str, Dict[str, Any]] = {a: o for o in _OPTIONS for a in [o["name"], *o["aliases"]]}


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _options(**kw: Any) -> List[Tuple[str, str]]:
    """Keyword arguments as (option, value) text pairs, converted by the option table's kinds:
    a value of the wrong Python type is a TypeError naming the argument and the type wanted."""
    out: List[Tuple[str, str]] = []
    for arg, value in kw.items():
        if value is None:
            continue
        spec = _BY_NAME.get("path" if arg == "paths" else arg.replace("_", "-"))
        if spec is None:
            raise ConfigError(f"unknown option {arg!r}")
        name, kind = spec["name"], spec["kind"]

        def wrong(wanted: str) -> TypeError:
            return TypeError(f"{arg} takes {wanted}, not {value!r}")

        if kind == "path":
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise wrong("a list of 'HOST:PORT' strings")
            out.extend((name, str(p)) for p in value)
        elif kind in ("ms", "count"):
            if not _is_int(value):
                raise wrong("whole milliseconds (an int)" if kind == "ms" else "an int")
            out.append((name, str(value)))
        elif kind == "seconds":
            if not (_is_int(value) or isinstance(value, float)):
                raise wrong("seconds (an int or a float)")
            out.append((name, str(value)))
        elif kind == "flag":
            if not isinstance(value, bool):
                raise wrong("a bool")
            out.append((name, "true" if value else "false"))
        elif kind == "file":
            if not isinstance(value, (str, os.PathLike)):
                raise wrong("a file name (a str or a path)")
            out.append((name, os.fspath(value)))
        else:
            if not isinstance(value, str):
                raise wrong("a str")
            out.append((name, value))
    return out


class _Endpoint:
    _role = ""

    def __init__(self, **kw: Any) -> None:
        self._native = _native.NativeTunnel(self._role, _options(**kw))

    @property
    def address(self) -> str:
        """The bound listen address, ``HOST:PORT``."""
        return self._native.local_addr

    def start(self) -> None:
        """Run in a background thread (returns at once)."""
        self._native.start()

    def run(self) -> None:
        """Run in this thread until :meth:`stop` is called elsewhere or Ctrl-C."""
        self._native.run()

    def stop(self) -> None:
        """Stop (sending CLOSE to peers). Idempotent; safe from any thread."""
        self._native.stop()

    @property
    def metrics_address(self) -> Optional[str]:
        """Where ``/metrics``, ``/stats`` and the live page are served (``metrics=`` option),
        as ``HOST:PORT``; None without one."""
        return self._native.metrics_addr

    @property
    def running(self) -> bool:
        """True while the endpoint runs."""
        return self._native.is_running()

    def stats(self) -> Dict[str, Any]:
        """Totals and per-path figures, as a dict (the JSON the CLI and C API show)."""
        return json.loads(self._native.stats_json())

    def reload(self, **kw: Any) -> str:
        """Apply new options to the running endpoint (the constructor's keywords, given in
        full: paths missing from ``paths`` are removed). Unchanged paths keep their index
        and figures; sessions go on. Raises ConfigError, and keeps the running
        configuration, when the new one is invalid or changes what needs a restart
        (listen, target, key, window). Returns a summary of what changed."""
        return self._native.reload(self._role, _options(**kw))

    def __enter__(self) -> "_Endpoint":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        native = getattr(self, "_native", None)
        if native is not None:
            native.stop()


class Client(_Endpoint):
    """The mpclient endpoint: forwards datagrams sent to ``listen`` over every path.

    Keyword arguments are the CLI's long options (:func:`options` lists them with their
    types): ``listen="127.0.0.1:4000"``, ``paths=["10.0.0.2:4001", ...]``, ``key=genkey()``
    (or ``key_file=PATH``), ``mode="redundant"``, ``probe_interval=250`` and ``down_after``
    (int, milliseconds), ``idle_timeout`` (seconds, int or float), ``max_sessions``,
    ``window``, ``config`` (a config file).
    """

    _role = "client"

    def __init__(
        self,
        listen: str = "127.0.0.1:0",
        paths: Sequence[str] = (),
        key: Optional[str] = None,
        mode: Optional[str] = None,
        **kw: Any,
    ) -> None:
        super().__init__(listen=listen, paths=list(paths), key=key, mode=mode, **kw)

    def set_mode(self, mode: str) -> None:
        """Switch the scheduling mode while running: ``"redundant"``, ``"failover"``,
        ``"k-best=K"`` or ``"balance"``. The server follows in band."""
        self._native.set_mode(mode)

    def __enter__(self) -> "Client":
        self.start()
        return self


class Server(_Endpoint):
    """The mpserver endpoint: receives from the bridges and forwards to ``target``.

    Keyword arguments as for :class:`Client` (``listen``, ``target``, ``key``, ...).
    """

    _role = "server"

    def __init__(self, listen: str = "0.0.0.0:0", target: Optional[str] = None, key: Optional[str] = None, **kw: Any) -> None:
        super().__init__(listen=listen, target=target, key=key, **kw)

    def __enter__(self) -> "Server":
        self.start()
        return self


class Socket:
    """Datagrams to an mpserver or :class:`Listener`, over every path. Made by :func:`connect`."""

    def __init__(self, paths: Sequence[str], key: Optional[str] = None, **kw: Any) -> None:
        self._native = _native.NativeSocket(_options(paths=list(paths), key=key, **kw))

    def send(self, data: bytes) -> None:
        """Send one datagram (never split; too large ones are dropped and counted)."""
        self._native.send(bytes(data))

    def recv(self, timeout: Optional[float] = None) -> bytes:
        """Next datagram; waits up to ``timeout`` seconds (None: forever), else TimeoutError."""
        return self._native.recv(timeout)

    def fileno(self) -> int:
        """A descriptor readable while a datagram waits (for select/selectors/poll)."""
        return self._native.fileno()

    def close(self) -> None:
        """Close (sending CLOSE). Idempotent; safe from any thread; wakes a blocked recv."""
        self._native.close()

    def stats(self) -> Dict[str, Any]:
        """The endpoint's stats, as a dict."""
        return json.loads(self._native.stats_json())

    def __iter__(self) -> Iterator[bytes]:
        """Received datagrams, until the socket is closed."""
        while True:
            try:
                yield self.recv()
            except Error:
                return

    def __enter__(self) -> "Socket":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Listener:
    """Accepts mpclients and :class:`Socket` s; each session is a peer id. Made by :func:`listen`."""

    def __init__(self, address: str, key: Optional[str] = None, **kw: Any) -> None:
        self._native = _native.NativeListener(_options(listen=address, key=key, **kw))

    @property
    def address(self) -> str:
        """The bound address, ``HOST:PORT``."""
        return self._native.local_addr

    def recv_from(self, timeout: Optional[float] = None) -> Tuple[bytes, int]:
        """Next datagram and the peer (session id) it came from; TimeoutError after ``timeout``."""
        return self._native.recv_from(timeout)

    def send_to(self, data: bytes, peer: int) -> None:
        """Send a datagram to a peer (a session id from :meth:`recv_from`)."""
        self._native.send_to(bytes(data), peer)

    def fileno(self) -> int:
        """A descriptor readable while a datagram waits."""
        return self._native.fileno()

    def close(self) -> None:
        """Close (sending CLOSE to every peer). Idempotent; safe from any thread."""
        self._native.close()

    def stats(self) -> Dict[str, Any]:
        """The endpoint's stats, as a dict."""
        return json.loads(self._native.stats_json())

    def __enter__(self) -> "Listener":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(paths: Sequence[str], key: Optional[str] = None, **kw: Any) -> Socket:
    """Open a :class:`Socket` sending over ``paths`` (``["HOST:PORT", ...]``)."""
    return Socket(paths, key=key, **kw)


def listen(address: str, key: Optional[str] = None, **kw: Any) -> Listener:
    """Open a :class:`Listener` on ``address`` (``"HOST:PORT"``; port 0 picks one)."""
    return Listener(address, key=key, **kw)
