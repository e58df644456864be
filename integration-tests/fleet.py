"""Fleet-mode test helpers: a Redis server and the rate-limit service (rls/), as context
managers that start them on free loopback ports and stop them on exit.

    from fleet import redis_server, rate_limit_service

    def test_something(tmp_path):
        with redis_server(tmp_path) as redis, \\
             rate_limit_service(CONFIG_YAML, redis.url, tmp_path) as rls:
            ...  # gRPC at rls.address (127.0.0.1:rls.port); Envoy's cluster -> rls.port
            redis.stop()     # fault: calls now fail with UNAVAILABLE
            redis.start()    # same port, empty (no persistence): calls succeed again

`redis_server` runs Debian's `redis-server` (`--save "" --appendonly no`: nothing on
disk) and waits for PING. When `redis-server` is missing it is installed with apt-get
if this process is root; the test is skipped only when that is impossible (`make
test-deps` and .ci/run install it beforehand).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
import redis as redis_client
import yaml

HERE = Path(__file__).resolve().parent
START_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{_tail(log)}")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout}s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# ---- Redis -----------------------------------------------------------------------

def redis_server_binary() -> str:
    """The path of redis-server, installing Debian's package when root; skips the test
    when it is missing and cannot be installed."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = ["apt-get", "install", "-y", "-qq", "redis-server"]
        if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
            subprocess.run(install, env=env, capture_output=True, timeout=600)
        found = shutil.which("redis-server")
        if found:
            return found
    pytest.skip("redis-server is not installed and cannot be installed here (needs root and apt-get): "
                "run `make test-deps` or `apt-get install redis-server`")


@dataclass
class Redis:
    binary: str
    workdir: Path
    port: int = 0
    proc: subprocess.Popen | None = None
    log: Path = field(init=False)

    def __post_init__(self):
        self.log = self.workdir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis_client.Redis:
        return redis_client.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True)

    def ping(self) -> bool:
        try:
            with self.client() as c:
                return bool(c.ping())
        except redis_client.RedisError:
            return False

    def start(self) -> None:
        """Starts Redis (on the same port after a stop; a new free port the first time)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        for attempt in range(3):
            port = self.port or free_port()
            cmd = [self.binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                   "--dir", str(self.workdir), "--protected-mode", "yes", "--daemonize", "no"]
            with open(self.log, "a") as out:
                self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.port = port
            try:
                _wait(self.ping, START_TIMEOUT, f"redis-server on port {port}", self.proc, self.log)
                return
            except RuntimeError:
                _stop(self.proc)
                if attempt == 2 or "already in use" not in _tail(self.log):
                    raise
                time.sleep(0.5)  # a restart on the same port: give the port time to free

    def stop(self) -> None:
        _stop(self.proc)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextlib.contextmanager
def redis_server(tmpdir: Path | str) -> Iterator[Redis]:
    """A fresh Redis on a free loopback port, no persistence; stopped on exit."""
    workdir = Path(tmpdir) / f"redis-{os.getpid()}-{free_port()}"
    workdir.mkdir(parents=True)
    server = Redis(redis_server_binary(), workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# ---- the rate-limit service ------------------------------------------------------

@dataclass
class RateLimitService:
    port: int
    proc: subprocess.Popen
    log: Path  # the service's own log (stderr)
    request_log: Path  # one JSON line per ShouldRateLimit call (rls/server.py)
    cmd: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def requests(self) -> list[dict]:
        """The calls received so far, oldest first: what Envoy sent and the answer."""
        if not self.request_log.exists():
            return []
        return [json.loads(line) for line in self.request_log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        _stop(self.proc)

    def start(self) -> None:
        """Starts the service again on its port (after `stop`)."""
        if self.proc.poll() is None:
            return
        cmd = list(self.cmd)
        cmd[cmd.index("--port") + 1] = str(self.port)
        ready = Path(cmd[cmd.index("--ready-file") + 1])
        ready.unlink(missing_ok=True)
        for attempt in range(20):
            with open(self.log, "a") as out:
                self.proc = subprocess.Popen(cmd, cwd=HERE, stdout=out, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL)
            try:
                _wait(ready.exists, START_TIMEOUT, "rate-limit service", self.proc, self.log)
                return
            except RuntimeError:
                if attempt == 19:
                    raise
                time.sleep(0.25)  # the port is still held by the stopped one


@contextlib.contextmanager
def rate_limit_service(config: str | dict, redis_url: str, tmpdir: Path | str) -> Iterator[RateLimitService]:
    """The rate-limit service (rls/) with `config` (envoyproxy/ratelimit YAML text, or a
    dict dumped as such) on a free loopback port; yields it (`.port`, `.address`,
    `.requests()`, `.stop()`, `.start()` on the same port) once it serves; stopped on
    exit."""
    workdir = Path(tmpdir) / f"rls-{os.getpid()}-{free_port()}"
    workdir.mkdir(parents=True)
    config_path = workdir / "config.yaml"
    config_path.write_text(config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=False))
    ready, log, request_log = workdir / "port", workdir / "rls.log", workdir / "requests.jsonl"
    cmd = [sys.executable, "-m", "rls", "--config", str(config_path), "--redis", redis_url, "--port", "0",
           "--ready-file", str(ready), "--request-log", str(request_log)]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=HERE, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    service = None
    try:
        _wait(ready.exists, START_TIMEOUT, "rate-limit service", proc, log)
        service = RateLimitService(int(ready.read_text()), proc, log, request_log, cmd)
        yield service
    finally:
        _stop(service.proc if service else proc)
