"""The real `gpt-server` command as a process, for the tests of its gRPC + REST modes.

    with GptServerProcess(["--port", "0", "--grpc-port", "0"], cwd=tmp) as server:
        server.wait_ready()                       # /ready answers 200 on the printed REST URL
        server.rest_url, server.grpc_target       # as the startup log printed them
        assert server.stop() == 0                 # SIGTERM
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2

GPT_SERVER = Path(sys.executable).parent / "gpt-server"
REST = r"REST gateway on (https?://[^ ]+:\d+)"
GRPC = r"gRPC server listening on (127\.0\.0\.1:\d+)"


class GptServerProcess:
    """gpt-server in a subprocess; its stderr lines (the log) collected by a thread."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen([str(GPT_SERVER), *args], cwd=cwd, env=env, text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}; stderr:\n{self.log}")

    @property
    def rest_url(self) -> str:
        return self.wait_for_line(REST)[1]

    @property
    def grpc_target(self) -> str:
        return self.wait_for_line(GRPC)[1]

    def wait_ready(self, verify: bool | str = True, timeout: float = 90) -> None:
        """Until the gateway's /ready says 200 (the gRPC server behind it serves)."""
        url = f"{self.rest_url}/ready"
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            try:
                if httpx2.get(url, verify=verify, timeout=5).status_code == 200:
                    return
            except httpx2.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{url} never answered 200; stderr:\n{self.log}")

    def stop(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def __enter__(self) -> GptServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
