"""The programs in examples/ run as a user runs them: each is a subprocess, against a real
gpt-server (the shipped demo model, API keys on) and a real gpt-gateway in front of it; the
assertions read what they print. Texts are checked against the same request sent directly."""

from __future__ import annotations

import ast
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest

from nanollm.client import Client
from nanollm.v1 import model_admin_pb2, train_pb2

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
USER, ADMIN = "example-user-key", "example-admin-key"
ENV = dict(os.environ, OMP_NUM_THREADS="1")
CORPUS = REPO / "nanollm" / "assets" / "corpus" / "shakespeare.txt"


class Process:
    """A command whose stderr lines a thread collects (the servers log there)."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        self.proc = subprocess.Popen(args, cwd=cwd, env=ENV, text=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = 90) -> re.Match[str]:
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.proc.poll() is None:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@dataclass
class Stack:
    grpc_target: str
    rest_url: str

    def client(self, key: str = ADMIN) -> Client:
        return Client(self.grpc_target, api_key=key, timeout=60)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """gpt-server on the demo model with keys, and gpt-gateway in front of it, both on free
    ports (--port 0 too: no fixed port is ever taken)."""
    folder = tmp_path_factory.mktemp("examples_server")
    server = Process([str(BIN / "gpt-server"), "--grpc-port", "0", "--port", "0",
                      "--metrics-port", "-1", "--device", "cpu", "--dtype", "float32",
                      "--api-key", USER, "--admin-key", ADMIN, "--grace-period", "2",
                      "--jobs-root", str(folder / "jobs")], cwd=folder)
    gateway = None
    try:
        grpc_port = server.wait_for(r"gRPC server listening on 127\.0\.0\.1:(\d+)")[1]
        target = f"127.0.0.1:{grpc_port}"
        # The gateway starts while the model loads.
        gateway = Process([str(BIN / "gpt-gateway"), "--port", "0", "--grpc-target", target],
                          cwd=folder)
        url = gateway.wait_for(r"REST gateway on (http://127\.0\.0\.1:\d+)")[1]
        server.wait_for(r"ready: model 'gpt' serves on ")
        end = time.monotonic() + 60
        while True:  # the app answers a moment after its log line
            try:
                if httpx2.get(f"{url}/ready").status_code == 200:
                    break
            except httpx2.ConnectError:
                pass
            assert time.monotonic() < end, "the gateway never became ready"
            time.sleep(0.05)
        yield Stack(target, url)
    finally:
        if gateway is not None:
            gateway.stop()
        server.stop()


def run_example(name: str, *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "examples" / name), *args], cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=180)


def line(pattern: str, out: str) -> re.Match[str]:
    """The one line of `out` that matches `pattern` in full."""
    found = list(re.finditer(rf"^{pattern}$", out, re.M))
    assert len(found) == 1, f"{len(found)} lines match {pattern!r} in:\n{out}"
    return found[0]


def text_after(label: str, out: str) -> str:
    """The text an example printed as a Python literal (repr) after `label` on one line."""
    return str(ast.literal_eval(line(re.escape(label) + r"(.+)", out)[1]))


@pytest.mark.parametrize("name", ["python_api.py", "grpc_client.py", "openai_sdk.py",
                                  "train_and_watch.py"])
def test_every_example_explains_itself(name: str) -> None:
    done = run_example(name, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: {name} [-h]")
    # The module docstring, how to run it included, as written.
    docstring = ast.get_docstring(ast.parse((REPO / "examples" / name).read_text()))
    assert docstring and f"\n\n{docstring}\n\noptions:\n" in done.stdout


def test_python_api_generates_streams_samples_and_prepares_a_dataset(tmp_path: Path) -> None:
    done = run_example("python_api.py", "--device", "cpu", "--max-tokens", "40",
                       "--out-dir", str(tmp_path / "shakespeare"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert re.search(r"^model: \S+/nanollm/assets/demo \(nanollm\): 4 layers, 4 heads, 256 "
                     r"wide, vocab 257, tokenizer byte, 3\.23M params$", out, re.M)
    generated = text_after("generate (seed 1): ", out)
    assert f"stream: {generated}\nstream finished: length, 40 tokens, same text as " \
           "generate: True\n" in out
    samples = re.findall(r"^sample (\d) \(seed (\d), 20 tokens, length\): '", out, re.M)
    assert samples == [("0", "1"), ("1", "2"), ("2", "3")]
    dataset = tmp_path / "shakespeare"
    assert (f"dataset: {dataset}: 291239 train and 32359 val tokens (gpt2 tokenizer, uint16 "
            f"ids)\ntrain on it: gpt-train --data-path {dataset} --max-iters 500\n") in out
    assert (dataset / "train.bin").stat().st_size == 291239 * 2
    assert (dataset / "val.bin").stat().st_size == 32359 * 2


def test_python_api_refuses_a_missing_checkpoint_and_creates_nothing(tmp_path: Path) -> None:
    done = run_example("python_api.py", "--checkpoint", str(tmp_path / "nope"),
                       "--out-dir", str(tmp_path / "data"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == f"python_api.py: {tmp_path / 'nope'}: no such file or folder\n"
    assert done.stdout == "" and list(tmp_path.iterdir()) == []


def test_grpc_client_example(stack: Stack) -> None:
    done = run_example("grpc_client.py", "--target", stack.grpc_target, "--api-key", USER,
                       "--max-tokens", "24")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    with stack.client(USER) as client:
        greedy = client.generate("ROMEO:", max_tokens=24, temperature=0.0).choices[0].text
        seeded = "".join(m.text for m in client.stream("ROMEO:", max_tokens=24, seed=1))
    assert text_after("generate (greedy, model gpt): ", out) == greedy
    assert re.search(r"^  6 prompt \+ 24 completion tokens, FINISH_REASON_LENGTH, \d+ ms$",
                     out, re.M)
    assert re.search(r"^  24 tokens, FINISH_REASON_LENGTH, seed 1, first token after \d+ ms$",
                     out, re.M)
    assert text_after("stream text: ", out) == seeded
    # The stream left after three messages got the start of the same text.
    early = text_after("stopped after 3 messages: ", out)
    assert len(early) == 3 and seeded.startswith(early)
    # Batched with two other prompts, the same seed still gives the same text.
    assert ast.literal_eval(line(r"async ROMEO: \(\d+ messages\): (.+)", out)[1]) == seeded
    line(r"async JULIET: \(\d+ messages\): '.+'", out)
    line(r"async HAMLET: \(\d+ messages\): '.+'", out)


def test_grpc_client_example_reports_a_refused_key(stack: Stack) -> None:
    done = run_example("grpc_client.py", "--target", stack.grpc_target, "--api-key", "wrong")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "grpc_client.py: UNAUTHENTICATED: unknown API key\n"


def test_openai_sdk_example(stack: Stack) -> None:
    done = run_example("openai_sdk.py", "--base-url", f"{stack.rest_url}/v1", "--api-key", USER,
                       "--max-tokens", "24")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    with stack.client(USER) as client:
        greedy = client.generate("ROMEO:", max_tokens=24, temperature=0.0).choices[0].text
        seeded = "".join(m.text for m in client.stream("ROMEO:", max_tokens=24, seed=1))
    assert out.startswith("model: gpt (owned by nanollm)\n")
    assert text_after("completion (greedy): ", out) == greedy
    assert re.search(r"^  finish_reason=length, prompt_tokens=6, completion_tokens=24, "
                     r"id=cmpl-\w+$", out, re.M)
    # The SSE stream, through the gateway, is the seeded gRPC stream.
    assert re.search(r"^streamed completion \(seed 1\): " + re.escape(seeded) +
                     r"\n  24 chunks, first after \d+ ms, usage: 24 completion tokens$", out,
                     re.M)
    chat = ast.literal_eval(line(r"chat \(assistant, (?:length|stop)\): (.+)", out)[1])
    assert f"streamed chat: {chat}\n  same reply as the plain call: True\n" in out
    assert ("unknown model: 404 NotFoundError: {'message': \"model 'no-such-model' is not "
            "loaded\", 'type': 'invalid_request_error', 'param': None, "
            "'code': 'model_not_found'}\n") in out


def test_openai_sdk_example_reports_a_refused_key(stack: Stack) -> None:
    done = run_example("openai_sdk.py", "--base-url", f"{stack.rest_url}/v1")
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == "openai_sdk.py: 401 AuthenticationError: unknown API key\n"


def test_train_and_watch_example_trains_serves_and_generates(stack: Stack) -> None:
    done = run_example("train_and_watch.py", "--target", stack.grpc_target, "--admin-key",
                       ADMIN, "--max-iters", "40", "--model-name", "example-tiny", "--logs")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    job_id = line(r"started job (\S+): (?:QUEUED|RUNNING)", out)[1]
    # Every logged step once: in the snapshot (a watch that joined late) or live.
    in_snapshot = int(line(r"watching \S+: \w+, step \d+/40, (\d+) steps logged so far", out)[1])
    live = re.findall(r"^step +(\d+)/40  loss \d+\.\d{4}  lr \S+  [\d,]+ tokens/s  eta \d+ s$",
                      out, re.M)
    assert live == ["10", "20", "30", "40"][in_snapshot:]
    assert re.search(r"^eval at step 40: train \d\.\d{4}, val \d\.\d{4}", out, re.M)
    assert "checkpoint latest saved at step 40\n" in out
    assert re.search(r"^state: SUCCEEDED \(trained to step 40; best val loss \d\.\d{4}\)$",
                     out, re.M)
    assert "loaded model example-tiny: MODEL_STATE_READY, 120,640 parameters\n" in out
    # --logs: gpt-train's console lines too, from its first to its last.
    line(r"log: starting: 0\.12M params \(2 layers, 2 heads, 64 wide, block 64, vocab 257, "
         r"byte\) from scratch; .*", out)
    line(r"log: done \(completed\) at step 40 in [\d.]+ s; best val loss \d\.\d{4}", out)
    with stack.client() as client:
        job = client.get_job(job_id)
        assert job.state == train_pb2.JOB_STATE_SUCCEEDED
        model = client.get_model("example-tiny")
        assert model.state == model_admin_pb2.MODEL_STATE_READY
        again = client.generate("ROMEO:", model="example-tiny", max_tokens=60, seed=1)
        assert text_after("example-tiny continues 'ROMEO:': ", out) == again.choices[0].text
        client.unload_model("example-tiny")


# Behind `slow` (make test-slow): in 2 of about 6 full-suite runs on a loaded 2-core machine
# the example did not exit within 60 s of its Ctrl-C (not reproduced in 8 runs of this test
# alone); the cause is not found yet. The finally below cancels the job either way, so a hang
# cannot leave a 100,000-step job holding the server's one job slot for the tests after it.
@pytest.mark.slow
def test_train_and_watch_example_cancels_its_job_on_ctrl_c(stack: Stack, tmp_path: Path
                                                           ) -> None:
    book = tmp_path / "book.txt"  # sent with the job (--upload)
    book.write_bytes(CORPUS.read_bytes()[:100_000])
    proc = subprocess.Popen([sys.executable, "-u", str(REPO / "examples" / "train_and_watch.py"),
                             "--target", stack.grpc_target, "--admin-key", ADMIN,
                             "--upload", str(book), "--max-iters", "100000"], cwd=REPO,
                            env=ENV, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        lines = []
        for text in proc.stdout:
            lines.append(text)
            if text.startswith("step "):
                proc.send_signal(signal.SIGINT)
                break
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        with stack.client() as client:
            for job in client.list_jobs():
                if job.state in (train_pb2.JOB_STATE_QUEUED, train_pb2.JOB_STATE_RUNNING):
                    client.cancel_job(job.job_id)
    out = "".join(lines) + rest
    assert proc.returncode == 130, out + err
    job_id = line(r"started job (\S+): \w+", out)[1]
    assert f"\nCtrl-C: cancelling job {job_id}\n" in out
    cancelled = re.search(rf"^state: CANCELLED \(cancelled by CancelJob at step (\d+); "
                          rf"{job_id}/latest holds step (\d+)\)$", out, re.M)
    assert cancelled and cancelled[1] == cancelled[2], out
    assert f"checkpoint latest saved at step {cancelled[1]}\n" in out
    with stack.client() as client:
        job = client.get_job(job_id)
        assert job.state == train_pb2.JOB_STATE_CANCELLED
        assert job.uploaded_bytes == 100_000


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--admin-key", USER], 1, r"PERMISSION_DENIED: this RPC needs the admin key; the key sent "
                               r"is a user key"),
    (["--upload", "/nonexistent/book.txt"], 2,
     r"--upload: No such file or directory: /nonexistent/book.txt"),
    (["--data", "nope.txt"], 1, r"INVALID_ARGUMENT: invalid request: spec\.data\.path: no "
                                r"dataset at 'nope\.txt' under the dataset roots \(.+\)"),
    # Too little text for one block of validation data: the job itself fails.
    (["--upload", "SMALL"], 1, r"job \S+ ended FAILED: \S+/upload\.txt: 42 tokens give 38 "
                               r"train and 4 val tokens .+"),
], ids=["user key", "missing upload", "unknown data path", "job fails"])
def test_train_and_watch_example_refusals(stack: Stack, tmp_path: Path, args: list[str],
                                          code: int, message: str) -> None:
    small = tmp_path / "small.txt"
    small.write_text("To be or not to be, that is the question.\n")
    args = [str(small) if a == "SMALL" else a for a in args]
    done = run_example("train_and_watch.py", "--target", stack.grpc_target, "--admin-key", ADMIN,
                       *args)
    assert done.returncode == code
    assert re.fullmatch(rf"train_and_watch\.py: {message}\n", done.stderr), done.stderr
