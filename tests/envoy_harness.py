"""Real processes for the Envoy tests: gpt-server replicas and Envoy itself, each on port 0, each
stopped with SIGTERM (then SIGKILL) when the test ends.

    with GptServer(ckpt, tmp_path / "a") as server, \\
            Envoy(transcoder_config([server.address], ANY, ANY, pb), tmp_path) as envoy:
        urllib.request.urlopen(f"{envoy.url}/v1/generate", data=b'{"prompt": "hi"}')
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway.envoy.render import Address, Config, write_config

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENVOY = BIN / "envoy"
ANY_PORT = Address("127.0.0.1", 0)
READY = r"ready: model 'gpt' serves on 127\.0\.0\.1:(\d+)"


def need_envoy() -> None:
    """Skip without Envoy on a developer's machine; in CI (where make install brings it) fail."""
    if not ENVOY.exists():
        reason = f"envoy is not installed next to {sys.executable}: run make install"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


def descriptor_set(out: Path) -> Path:
    """What `make proto` writes to build/nanollm.pb, written to out instead (so tests neither
    need nor touch the checkout's build/)."""
    spec = importlib.util.spec_from_file_location("codegen", REPO / "proto" / "codegen.py")
    assert spec is not None and spec.loader is not None
    codegen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(codegen)
    generated = out.parent / "generated"  # protoc writes Python code too; unused here
    generated.mkdir(parents=True, exist_ok=True)
    codegen.run_protoc(REPO, generated, descriptor_set=out)
    return out


def stop(proc: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after grace seconds."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class GptServer:
    """gpt-server serving `checkpoint` as 'gpt' from its own folder (logs/, jobs/), gRPC on a
    free port; stderr lines (the request log among them) collected by a thread."""

    def __init__(self, checkpoint: Path, folder: Path, *extra: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        args = [str(BIN / "gpt-server"), "--checkpoint", str(checkpoint), "--grpc-only",
                "--grpc-port", "0",
                "--metrics-port", "-1", "--device", "cpu", "--dtype", "float32",
                "--model-root", str(checkpoint.parent), "--grace-period", "1", *extra]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(args, cwd=folder, env=env, text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.port = 0

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_ready(self, timeout: float = 90) -> GptServer:
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            for line in list(self.lines):
                if match := re.search(READY, line):
                    self.port = int(match[1])
                    return self
            time.sleep(0.05)
        raise AssertionError("gpt-server did not become ready; stderr:\n" + "\n".join(self.lines))

    @property
    def address(self) -> Address:
        return Address("127.0.0.1", self.port)

    def requests_served(self, method: str = "Generate") -> int:
        """Requests of one RPC this replica logged (one log line each)."""
        return sum(f" {method} model=gpt " in line for line in list(self.lines))

    def close(self) -> None:
        stop(self.proc)

    def __enter__(self) -> GptServer:
        try:
            return self.wait_ready()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


class Envoy:
    """The real Envoy on a rendered config (listener and admin on any free port)."""

    def __init__(self, config: Config, folder: Path, template: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{template}.yaml"
        write_config(config, path, template)
        admin_file = folder / "admin-address.txt"
        admin_file.unlink(missing_ok=True)
        self.log = folder / "envoy.log"
        # No hot restart: no shared memory, so Envoys of parallel tests never collide.
        self.proc = subprocess.Popen(
            [str(ENVOY), "-c", str(path), "--disable-hot-restart", "--concurrency", "1",
             "--admin-address-path", str(admin_file), "-l", "warning",
             "--log-path", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.admin = f"http://{self._wait_for(admin_file)}"
            self.port = self._listener_port()
        except BaseException:
            stop(self.proc)
            raise
        self.url = f"http://127.0.0.1:{self.port}"
        self.target = f"127.0.0.1:{self.port}"

    def _wait_for(self, file: Path, timeout: float = 20) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            if file.exists() and (text := file.read_text().strip()):
                return text
            time.sleep(0.05)
        log = self.log.read_text() if self.log.exists() else ""
        raise AssertionError(f"envoy did not start (exit {self.proc.poll()}):\n{log}")

    def _listener_port(self, timeout: float = 20) -> int:
        """The port the listener bound (port 0 in the config), once Envoy is listening."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            listeners = json.loads(self.admin_get("/listeners?format=json"))
            statuses = listeners.get("listener_statuses", [])
            if statuses and (port := statuses[0]["local_address"]["socket_address"].get(
                    "port_value")):
                return int(port)
            time.sleep(0.05)
        raise AssertionError("envoy's listener did not start")

    def admin_get(self, path: str) -> str:
        with urllib.request.urlopen(self.admin + path, timeout=10) as response:
            return response.read().decode()

    def host_health(self) -> dict[str, str]:
        """'host:port' -> Envoy's health flags of each upstream ('healthy' when it is)."""
        flags = {}
        for line in self.admin_get("/clusters").splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[2] == "health_flags":
                flags[parts[1]] = parts[3]
        return flags

    def close(self) -> None:
        stop(self.proc)

    def __enter__(self) -> Envoy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
