"""Run the demo backends as child processes on free local ports.

``DemoBackends.start(workdir)`` starts the simulated 7B model on a real Triton server
(PyTriton), the demo OpenAI-compatible server and the demo Anthropic Messages API server,
waits until all answer, and hands out a ``BackendsConfig`` pointing at them: ``local-7b``
on Triton, ``mid-32b`` on the OpenAI API, ``premium`` on the Anthropic API. Each child runs
in its own process group, logs to a file in ``workdir``, and is stopped by ``stop()``
(SIGTERM, then SIGKILL to its group).

The demo Anthropic server checks an ``x-api-key``: the key is read from the environment
variable ``TTC_DEMO_ANTHROPIC_KEY`` (``DEMO_ANTHROPIC_KEY_ENV``), which the launcher sets to
a random key in its own process when it is not set already; the child server and the
``premium`` tier (``api_key_env``) both read it from there.

``python -m router.backends.demo.launcher [--workdir DIR] [--measure]`` starts them, prints
their backends.yaml (and the key to export for using it elsewhere), and serves until
interrupted; ``--measure`` instead streams one greedy answer from every tier, prints
start-up and answer latencies, and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import router
from router.backends.demo.answers import DEMO_OPENAI_MODELS, DEMO_TRITON_MODEL
from router.config.backends import BackendsConfig, LatencyConfig, PriceConfig, TierConfig
from router.core.types import SampleRequest, TextDelta
from router.errors import BackendError

_POLL_S = 0.1
_STOP_TIMEOUT_S = 15.0
DEFAULT_ARMS = ("local-7b/greedy", "mid-32b/greedy", "premium/greedy")
DEMO_ANTHROPIC_KEY_ENV = "TTC_DEMO_ANTHROPIC_KEY"
"""The environment variable holding the demo Anthropic server's API key."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(router.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _http_ok(url: str, headers: Mapping[str, str] | None = None) -> bool:
    try:
        request = urllib.request.Request(url, headers=dict(headers or {}))
        with urllib.request.urlopen(request, timeout=1.0) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class DemoProcess:
    """One child process, its log file, and how to stop it."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            list(argv),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=_child_env(),
            start_new_session=True,
        )
        atexit.register(self.stop)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_until(
        self, probe_url: str, timeout_s: float, *, headers: Mapping[str, str] | None = None
    ) -> float:
        """Poll ``probe_url`` (sending ``headers``) until it answers 200; return the seconds
        since the start."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise BackendError(
                    f"demo {self.name} exited with code {self.proc.returncode} "
                    "before it was ready; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if _http_ok(probe_url, headers):
                return time.monotonic() - self.started_at
            time.sleep(_POLL_S)
        self.stop()
        raise BackendError(
            f"demo {self.name} was not ready within {timeout_s:.0f}s; log {self.log_path}:\n"
            f"{self.log_tail()}"
        )

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S) -> None:
        """SIGTERM the child, wait, then SIGKILL whatever is left of its process group.

        The group sweep matters: Triton's Python-backend stubs (and their multiprocessing
        helpers) can outlive the tritonserver that started them.
        """
        atexit.unregister(self.stop)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(timeout=5)
        if not self._log.closed:
            self._log.close()


class TritonDemoServer:
    """The simulated 7B model on a real Triton server (PyTriton), as a child process."""

    def __init__(
        self,
        workdir: Path,
        *,
        model_name: str = DEMO_TRITON_MODEL.name,
        token_delay_ms: float | None = None,
        exit_timeout_s: int = 1,
    ) -> None:
        self.model_name = model_name
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        argv = [
            sys.executable,
            "-m",
            "router.backends.demo.triton_model",
            "--grpc-port",
            str(self.grpc_port),
            "--http-port",
            str(self.http_port),
            "--metrics-port",
            str(self.metrics_port),
            "--model-name",
            model_name,
            "--exit-timeout-s",
            str(exit_timeout_s),
        ]
        if token_delay_ms is not None:
            argv += ["--token-delay-ms", str(token_delay_ms)]
        self._argv = argv
        self._log_path = workdir / "demo-triton.log"
        self.process = DemoProcess("Triton server", argv, self._log_path)
        self.start_seconds: float | None = None
        self.restarts = 0

    @property
    def endpoint(self) -> str:
        """gRPC ``host:port`` (what ``TierConfig.endpoint`` wants for ``protocol: triton``)."""
        return f"127.0.0.1:{self.grpc_port}"

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        url = f"http://127.0.0.1:{self.http_port}/v2/models/{self.model_name}/ready"
        self.start_seconds = self.process.wait_until(url, timeout_s)

    def stop(self) -> None:
        self.process.stop()

    def restart_if_dead(self, timeout_s: float = 120.0) -> bool:
        """Start the server again, on the same ports, if it has exited; True if it had.

        The CPU-only tritonserver that PyTriton bundles has been seen to crash (SIGSEGV)
        between requests; a long-lived session server comes back instead of failing every
        later caller. The log keeps the crash.
        """
        if self.process.alive():
            return False
        self.process.stop()
        self.process = DemoProcess("Triton server", self._argv, self._log_path)
        self.wait_ready(timeout_s)
        self.restarts += 1
        return True


class OpenAIDemoServer:
    """The demo OpenAI-compatible server, as a child process."""

    def __init__(self, workdir: Path, *, api_key_env: str | None = None) -> None:
        self.port = free_port()
        argv = [
            sys.executable,
            "-m",
            "router.backends.demo.openai_server",
            "--port",
            str(self.port),
        ]
        if api_key_env:
            argv += ["--api-key-env", api_key_env]
        self.process = DemoProcess("OpenAI server", argv, workdir / f"demo-openai-{self.port}.log")
        self.start_seconds: float | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        self.start_seconds = self.process.wait_until(f"{self.endpoint}/v1/models", timeout_s)

    def stop(self) -> None:
        self.process.stop()


class AnthropicDemoServer:
    """The demo Anthropic Messages API server, as a child process.

    With ``api_key_env`` (default ``DEMO_ANTHROPIC_KEY_ENV``) the server requires the key
    held by that variable; the variable is set to a random key in this process first if it
    is unset. ``api_key_env=None`` starts it without a key check.
    """

    def __init__(self, workdir: Path, *, api_key_env: str | None = DEMO_ANTHROPIC_KEY_ENV) -> None:
        self.port = free_port()
        self.api_key_env = api_key_env
        argv = [
            sys.executable,
            "-m",
            "router.backends.demo.anthropic_server",
            "--port",
            str(self.port),
        ]
        if api_key_env:
            if not os.environ.get(api_key_env):
                os.environ[api_key_env] = f"demo-{secrets.token_urlsafe(18)}"
            argv += ["--api-key-env", api_key_env]
        self.process = DemoProcess(
            "Anthropic server", argv, workdir / f"demo-anthropic-{self.port}.log"
        )
        self.start_seconds: float | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until ``GET /v1/models`` answers 200 to a request carrying the key."""
        key = os.environ.get(self.api_key_env, "") if self.api_key_env else ""
        headers = {"anthropic-version": "2023-06-01"} | ({"x-api-key": key} if key else {})
        self.start_seconds = self.process.wait_until(
            f"{self.endpoint}/v1/models", timeout_s, headers=headers
        )

    def stop(self) -> None:
        self.process.stop()


def demo_backends_config(
    triton_endpoint: str,
    openai_endpoint: str,
    arms: Sequence[str] = DEFAULT_ARMS,
    *,
    anthropic_endpoint: str | None = None,
    anthropic_key_env: str | None = DEMO_ANTHROPIC_KEY_ENV,
) -> BackendsConfig:
    """Three simulated tiers: ``local-7b`` (Triton), ``mid-32b`` (OpenAI API) and ``premium``
    (the Anthropic API at ``anthropic_endpoint``, whose key is in ``anthropic_key_env``;
    without an Anthropic endpoint, the OpenAI API serves ``premium`` too). A tier that is
    down falls back to the next one up: local-7b → mid-32b → premium."""
    mid, premium = DEMO_OPENAI_MODELS["demo-32b"], DEMO_OPENAI_MODELS["demo-premium"]
    return BackendsConfig(
        tiers={
            "local-7b": TierConfig(
                protocol="triton",
                endpoint=triton_endpoint,
                model=DEMO_TRITON_MODEL.name,
                price=PriceConfig(input_per_mtok=0.05, output_per_mtok=0.10),
                context_window=8192,
                max_output_tokens=2048,
                timeout_s=30.0,
                max_concurrency=16,
                fallback="mid-32b",
                latency=LatencyConfig(
                    first_token_ms=DEMO_TRITON_MODEL.first_token_ms + 10,
                    per_token_ms=DEMO_TRITON_MODEL.per_token_ms + 1,
                ),
            ),
            "mid-32b": TierConfig(
                protocol="openai",
                endpoint=openai_endpoint,
                model=mid.name,
                price=PriceConfig(input_per_mtok=0.40, output_per_mtok=0.80),
                context_window=32768,
                max_output_tokens=4096,
                timeout_s=30.0,
                max_concurrency=32,
                fallback="premium",
                latency=LatencyConfig(
                    first_token_ms=mid.first_token_ms + 10, per_token_ms=mid.per_token_ms + 1
                ),
            ),
            "premium": TierConfig(
                protocol="openai" if anthropic_endpoint is None else "anthropic",
                endpoint=openai_endpoint if anthropic_endpoint is None else anthropic_endpoint,
                api_key_env=None if anthropic_endpoint is None else anthropic_key_env,
                model=premium.name,
                price=PriceConfig(input_per_mtok=2.50, output_per_mtok=10.00),
                context_window=128000,
                max_output_tokens=8192,
                timeout_s=60.0,
                max_concurrency=32,
                latency=LatencyConfig(
                    first_token_ms=premium.first_token_ms + 10,
                    per_token_ms=premium.per_token_ms + 1,
                ),
            ),
        },
        arms=list(arms),
    )


class DemoBackends:
    """The demo servers together; ``start`` launches them, ``stop`` ends what it launched.

    Built by hand without an ``anthropic`` server, its config serves ``premium`` from the
    OpenAI-compatible server instead.
    """

    def __init__(
        self,
        triton: TritonDemoServer,
        openai: OpenAIDemoServer,
        anthropic: AnthropicDemoServer | None = None,
        *,
        owned: bool = True,
    ) -> None:
        self.triton = triton
        self.openai = openai
        self.anthropic = anthropic
        self._owned = owned

    @classmethod
    def start(
        cls,
        workdir: Path,
        *,
        token_delay_ms: float | None = None,
        ready_timeout_s: float = 120.0,
    ) -> DemoBackends:
        """Start the servers in parallel; wait until all answer, else raise ``BackendError``."""
        workdir.mkdir(parents=True, exist_ok=True)
        started: list[TritonDemoServer | OpenAIDemoServer | AnthropicDemoServer] = []
        try:
            triton = TritonDemoServer(workdir, token_delay_ms=token_delay_ms)
            started.append(triton)
            openai = OpenAIDemoServer(workdir)
            started.append(openai)
            anthropic = AnthropicDemoServer(workdir)
            started.append(anthropic)
            openai.wait_ready(min(ready_timeout_s, 30.0))
            anthropic.wait_ready(min(ready_timeout_s, 30.0))
            triton.wait_ready(ready_timeout_s)
        except BaseException:
            for server in reversed(started):
                server.stop()
            raise
        return cls(triton, openai, anthropic)

    @property
    def triton_endpoint(self) -> str:
        return self.triton.endpoint

    @property
    def openai_endpoint(self) -> str:
        return self.openai.endpoint

    @property
    def anthropic_endpoint(self) -> str | None:
        return self.anthropic.endpoint if self.anthropic is not None else None

    def backends_config(self, arms: Sequence[str] = DEFAULT_ARMS) -> BackendsConfig:
        return demo_backends_config(
            self.triton_endpoint,
            self.openai_endpoint,
            arms,
            anthropic_endpoint=self.anthropic_endpoint,
            anthropic_key_env=self.anthropic.api_key_env if self.anthropic else None,
        )

    def stop(self) -> None:
        if self._owned:
            if self.anthropic is not None:
                self.anthropic.stop()
            self.openai.stop()
            self.triton.stop()

    def __enter__(self) -> DemoBackends:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def _measure_tier(name: str, cfg: TierConfig, prompt: str) -> str:
    from router.backends.factory import build_backend

    backend = build_backend(name, cfg)
    first: float | None = None
    tokens = 0
    try:
        started = time.perf_counter()
        async for item in backend.stream(SampleRequest(prompt, max_tokens=256)):
            if isinstance(item, TextDelta):
                first = first if first is not None else time.perf_counter() - started
            else:
                tokens = item.output_tokens
        total = time.perf_counter() - started
    finally:
        await backend.aclose()
    return (
        f"{name:<9} {cfg.protocol:<9} first delta {1000 * (first or total):7.1f} ms, "
        f"whole answer {1000 * total:7.1f} ms, {tokens} output tokens"
    )


async def _measure(config: BackendsConfig, prompt: str) -> list[str]:
    lines = []
    for name, cfg in config.tiers.items():
        await _measure_tier(name, cfg, prompt)  # warm-up: first connection, first request
        lines.append(await _measure_tier(name, cfg, prompt))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m router.backends.demo.launcher",
        description=(
            "Start the simulated (demo) backends: Triton via PyTriton, an OpenAI API and an "
            "Anthropic Messages API."
        ),
    )
    parser.add_argument(
        "--workdir", type=Path, default=None, help="logs go here (default: a temp dir)"
    )
    parser.add_argument(
        "--measure", action="store_true", help="time one answer per tier, then exit"
    )
    parser.add_argument("--prompt", default="What is 17*23?")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ttc-demo-backends-"))
    started = time.monotonic()
    demo = DemoBackends.start(workdir)
    try:
        anthropic_s = demo.anthropic.start_seconds if demo.anthropic else None
        print(
            f"demo backends ready in {time.monotonic() - started:.2f}s "
            f"(Triton {demo.triton.start_seconds:.2f}s, OpenAI {demo.openai.start_seconds:.2f}s, "
            f"Anthropic {anthropic_s or 0.0:.2f}s)",
            flush=True,
        )
        if args.measure:
            for line in asyncio.run(_measure(demo.backends_config(), args.prompt)):
                print(line, flush=True)
            return 0
        import yaml

        print(
            f"# the premium tier reads its key from {DEMO_ANTHROPIC_KEY_ENV}; elsewhere run:\n"
            f"# export {DEMO_ANTHROPIC_KEY_ENV}={os.environ.get(DEMO_ANTHROPIC_KEY_ENV, '')}",
            flush=True,
        )
        print(yaml.safe_dump(demo.backends_config().model_dump(mode="json"), sort_keys=False))
        stop = asyncio.Event()

        async def wait() -> None:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()

        asyncio.run(wait())
        return 0
    finally:
        stop_started = time.monotonic()
        demo.stop()
        print(f"demo backends stopped in {time.monotonic() - stop_started:.2f}s", flush=True)


if __name__ == "__main__":
    sys.exit(main())
