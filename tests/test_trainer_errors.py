"""gpt-train refuses what it cannot do in one line with exit code 2, and changes nothing on disk:
no new out_dir, an existing run left as it was. Also the failures found only after loading
(a checkpoint, a download), which must not leave events.jsonl or train.log behind."""

from __future__ import annotations

import argparse
import http.server
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from nanollm.data import DataPreparer
from trainer.cli import main
from trainer.distributed import cpu_count

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "nanollm" / "assets" / "corpus" / "shakespeare.txt"
SHAPE = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32"]
FAST = ["--device", "cpu", "--dtype", "float32", "--no-progress", "--num-threads", "1",
        "--batch-size", "2", "--eval-iters", "1"]


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for folders)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="module")
def base_run(byte_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-step run (latest/ with trainer_state.pt, best/, events, log)."""
    out = tmp_path_factory.mktemp("errors") / "base"
    assert main(["--data-path", str(byte_dataset), "--out-dir", str(out), *SHAPE, *FAST,
                 "--max-iters", "2", "--eval-interval", "2"]) == 0
    return out


@pytest.fixture(scope="module")
def gpt2_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("gpt2_data")
    text = root / "small.txt"
    text.write_bytes(CORPUS.read_bytes()[:40_000])
    return DataPreparer("gpt2").prepare_data(text, output_dir=root / "small-gpt2",
                                             block_size=32, show_progress=False)


@pytest.fixture
def not_found_url() -> Iterator[str]:
    """http://127.0.0.1:PORT/missing.txt, answered with 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/missing.txt"
    finally:
        server.shutdown()
        server.server_close()


def _run_copy(base: Path, tmp: Path, change: Callable[[Path], None] | None = None) -> Path:
    out = tmp / "run"
    shutil.copytree(base, out)
    if change is not None:
        change(out)
    return out


def _without_optimizer(out: Path) -> None:
    state_file = out / "latest" / "trainer_state.pt"
    state = torch.load(state_file, weights_only=True)
    del state["optimizer"]
    torch.save(state, state_file)


def _foreign_optimizer(out: Path) -> None:
    # the optimizer state of another model: right structure, wrong shapes
    state_file = out / "latest" / "trainer_state.pt"
    state = torch.load(state_file, weights_only=True)
    for values in state["optimizer"]["state"].values():
        values["exp_avg"] = torch.zeros(3, 3)
        values["exp_avg_sq"] = torch.zeros(3, 3)
    torch.save(state, state_file)


def _truncated(out: Path) -> None:
    state_file = out / "latest" / "trainer_state.pt"
    state_file.write_bytes(state_file.read_bytes()[:500])


def _best_only(out: Path) -> None:
    # the reported case: a run folder whose latest/ is gone still holds a best model
    shutil.rmtree(out / "latest")


RESUME = ["--init-from", "resume", "--max-iters", "4"]


@pytest.mark.parametrize(
    ("change", "flags", "message"),
    [
        (_without_optimizer, RESUME,
         "{out}/latest/trainer_state.pt: not a trainer state nanoLLM can resume (no 'optimizer'); "
         "start a new run from its weights instead: --init-from {out}/latest --out-dir NEW"),
        (_foreign_optimizer, RESUME,
         "{out}/latest/trainer_state.pt: does not fit this run (ValueError: optimizer 'exp_avg' "
         "of shape (3, 3) for a parameter of shape (257, 32)); start a new run from its weights "
         "instead: --init-from {out}/latest --out-dir NEW"),
        (_truncated, RESUME, "{out}/latest/trainer_state.pt: corrupt or not a torch file"),
        (None, [*RESUME, "--data-path", str(CORPUS)],
         "data_path '{corpus}' is not the data of the run being resumed ('{data}'); a resumed "
         "run continues on its own data (its data position and best val loss belong to it): "
         "drop --data-path, or fine-tune from the run on the new data with --init-from "
         "{out}/latest --out-dir NEW"),
        (_best_only, [*SHAPE, "--max-iters", "2"],
         "out_dir '{out}' already holds a run (best, events.jsonl, train.log, train_config.yaml); "
         "continue it with --init-from resume, choose another --out-dir, or give --overwrite to "
         "delete that run and start a new one there"),
        (None, ["--overwrite", "--init-from", "{out}/best", "--max-iters", "2"],
         "--overwrite would delete '{out}/best', the checkpoint init_from '{out}/best' starts "
         "from; write the new run to another --out-dir"),
        (None, [*RESUME, "--overwrite"],
         "--overwrite starts a new run in place of an earlier one; it does not go with "
         "--init-from resume, which continues the run"),
    ],
    ids=["no-optimizer", "foreign-optimizer", "truncated", "other-data", "best-only",
         "overwrite-own-source", "overwrite-resume"],
)
def test_an_existing_run_is_refused_and_left_as_it_was(
        change: Callable[[Path], None] | None, flags: list[str], message: str, base_run: Path,
        byte_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _run_copy(base_run, tmp_path, change)
    before = snapshot(out)
    names = dict(out=out, corpus=CORPUS, data=byte_dataset)
    argv = ["--data-path", str(byte_dataset), "--out-dir", str(out), *FAST,
            *[flag.format(**names) for flag in flags]]  # a later --data-path wins
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt-train: error: " + message.format(**names)), err
    assert err.count("\n") == 1
    assert snapshot(out) == before


def _nanogpt_ckpt(path: Path, *, extra: object = None) -> Path:
    """A nanoGPT ckpt.pt of a 1-layer, block-32 byte model (`extra`: one more entry)."""
    from nanollm.config import ModelConfig
    from nanollm.model import GPT

    config = ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, vocab_size=257,
                         tokenizer="byte")
    args = {k: getattr(config, k) for k in ("n_layer", "n_head", "n_embd", "block_size",
                                            "vocab_size", "bias", "dropout")}
    ckpt: dict[str, object] = {"model": GPT(config).state_dict(), "model_args": args}
    if extra is not None:
        ckpt["config"] = extra
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("case", ["nanogpt-block-size", "pickled-object", "url-404"])
def test_failures_after_loading_leave_no_out_dir(
        case: str, byte_dataset: Path, tmp_path: Path, not_found_url: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "new_run"
    data = ["--data-path", str(byte_dataset)]
    if case == "nanogpt-block-size":  # checked when the weights are read, not before
        flags = ["--init-from", str(_nanogpt_ckpt(tmp_path / "ng" / "ckpt.pt")),
                 "--block-size", "64", *data]
        want = "the checkpoint"
    elif case == "pickled-object":  # torch.load(weights_only=True) refuses it
        ckpt = _nanogpt_ckpt(tmp_path / "ng" / "ckpt.pt", extra=argparse.Namespace(lr=1.0))
        flags = ["--init-from", str(ckpt), *data]
        want = "argparse.Namespace"
    else:
        flags = ["--data-path", not_found_url, "--data-dir", str(tmp_path / "data"), *SHAPE,
                 "--allow-private-urls"]  # the test server is on 127.0.0.1
        want = "404"
    assert main(["--out-dir", str(out), *FAST, "--max-iters", "2", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt-train: error: ") and want in err, err
    assert not out.exists()


@pytest.mark.parametrize(
    ("setup", "flags", "message"),
    [
        ("file", [], "out_dir '{out}' is a file, not a folder; give a folder path"),
        ("data-dir-file", ["--data-path", str(CORPUS), "--data-dir", "{tmp}/file/data"],
         "data_dir '{tmp}/file/data' cannot be created: '{tmp}/file' is a file"),
        (None, ["--num-threads", "100000"],
         "TrainingConfig.num_threads = 100000 is out of range [1, 1024]"),
        (None, ["--num-threads", "{many}"],
         "TrainingConfig.num_threads = {many} is more than 4x the {cores} CPU core(s) this "
         "process may use; extra threads only slow torch down: give at most {most} (the number "
         "of cores is usually fastest)"),
        ("folder-config", ["--config", "{tmp}"],
         "config file {tmp} is a folder; give a .yaml, .yml or .json file"),
        ("model-list", ["--config", "{tmp}/c.yaml"],
         "TrainingConfig.model must be a mapping of ModelConfig fields (`model:` followed by "
         "indented `name: value` lines), got [4, 4] (from {tmp}/c.yaml)"),
        ("vocab", ["--config", "{tmp}/c.yaml"],
         "ModelConfig.vocab_size = 1000 was given but the vocabulary comes from the data: 257 "
         "tokens (byte), 257 rows in the model; drop `vocab_size:` from the config file"),
        (None, ["--data-path", "{gpt2}", "--tokenizer", "byte"],
         "ModelConfig.tokenizer = 'byte' was given but the prepared dataset {gpt2} was tokenized "
         "with 'gpt2'; drop --tokenizer (a prepared dataset decides it), or give the raw text as "
         "--data-path to prepare it with 'byte'"),
        (None, ["--block-size", "10000"], "the val split has "),  # found once the data is open
        (None, ["--tokenizer", "gpt2"],
         "ModelConfig.tokenizer = 'gpt2' was given but the prepared dataset {data} was tokenized "
         "with 'byte'"),
    ],
)
def test_bad_input_is_one_line_and_creates_nothing(
        setup: str | None, flags: list[str], message: str, byte_dataset: Path,
        gpt2_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    if setup == "file":
        out.write_text("not a folder")
    elif setup == "data-dir-file":
        (tmp_path / "file").write_text("not a folder")
    elif setup == "model-list":
        (tmp_path / "c.yaml").write_text("model: [4, 4]\n")
    elif setup == "vocab":
        (tmp_path / "c.yaml").write_text("model:\n  vocab_size: 1000\n")
    before = snapshot(tmp_path)
    cores = cpu_count()
    names = dict(out=out, tmp=tmp_path, gpt2=gpt2_dataset, data=byte_dataset, cores=cores,
                 most=4 * cores, many=4 * cores + 1)
    argv = ["--data-path", str(byte_dataset), "--out-dir", str(out), *SHAPE, *FAST,
            "--max-iters", "2", *[flag.format(**names) for flag in flags]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt-train: error: " + message.format(**names)), err
    assert err.count("\n") == 1
    assert snapshot(tmp_path) == before


def test_resume_refuses_data_whose_content_changed(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # the same path, new text: its val loss would be compared with the old best
    text, out = tmp_path / "book.txt", tmp_path / "run"
    text.write_bytes(CORPUS.read_bytes()[:20_000])
    assert main(["--data-path", str(text), "--data-dir", str(tmp_path / "data"), "--out-dir",
                 str(out), "--tokenizer", "byte", *SHAPE, *FAST, "--max-iters", "2"]) == 0
    text.write_bytes(CORPUS.read_bytes()[20_000:40_000])
    before = snapshot(out)
    capsys.readouterr()
    assert main(["--init-from", "resume", "--out-dir", str(out), "--max-iters", "4"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gpt-train: error: the data {tmp_path / 'data' / 'book-byte'} is not "
                          f"what the run {out / 'latest'} was trained on (sha256 "), err
    assert err.endswith("a resumed run continues on its own data: restore it, or fine-tune on "
                        f"the new data with --init-from {out / 'latest'} --out-dir NEW\n")
    assert snapshot(out) == before
