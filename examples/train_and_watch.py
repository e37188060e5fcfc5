"""Train a tiny model on a running gpt-server over gRPC, watch it learn, then serve it and
generate from it.

    gpt-server &                                 # gRPC on 127.0.0.1:50051
    python examples/train_and_watch.py           # 200 steps on the bundled Shakespeare corpus
    python examples/train_and_watch.py --upload mybook.txt --max-iters 500
    python examples/train_and_watch.py --target host:50051 --admin-key KEY --data books/big.txt

TrainService runs the job as a `gpt-train` process next to the server. This program starts it
(StartJob), follows its event stream (WatchJob: a snapshot, then steps, evaluations,
checkpoints and state changes until the job ends), loads the trained model by job id
(LoadModel) and generates from it. `--data` is a path under the server's data roots (by
default its data/ folder and the bundled corpus, which holds shakespeare.txt); `--upload`
sends a local text file instead. On a server with API keys every training call needs the
admin key. Ctrl-C cancels the job (CancelJob: it saves its latest step, then stops; exit
code 130); a second Ctrl-C stops waiting for that. A job that fails, or a refused call, is one
line on stderr and exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from nanollm.client import Client, FailedPreconditionError, NanoLLMError, WatchStream
from nanollm.v1 import model_admin_pb2, train_pb2

CALL_TIMEOUT = 120.0  # seconds; a load or a generation on a busy CPU can take a while


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="127.0.0.1:50051",
                   help="host:port of gpt-server (default: %(default)s)")
    p.add_argument("--admin-key", help="the server's admin key (servers with API keys)")
    data = p.add_mutually_exclusive_group()
    data.add_argument("--data", default="shakespeare.txt",
                      help="text file or folder under the server's data roots "
                      "(default: %(default)s)")
    data.add_argument("--upload", type=Path, help="local text file sent with the job")
    p.add_argument("--max-iters", type=int, default=200,
                   help="training steps (default: %(default)s)")
    p.add_argument("--n-layer", type=int, default=2,
                   help="transformer blocks (default: %(default)s)")
    p.add_argument("--n-embd", type=int, default=64,
                   help="width, even: 2 heads (default: %(default)s)")
    p.add_argument("--block-size", type=int, default=64,
                   help="context length in bytes (default: %(default)s)")
    p.add_argument("--model-name",
                   help="name to serve the trained model under (default: the job id)")
    p.add_argument("--prompt", default="ROMEO:", help="text to continue (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=60,
                   help="tokens to generate (default: %(default)s)")
    p.add_argument("--logs", action="store_true", help="also print the job's console lines")
    return p.parse_args(argv)


def job_spec(args: argparse.Namespace) -> train_pb2.JobSpec:
    """A byte-level model from scratch on CPU; evaluated four times, every 10th step logged."""
    if args.upload is not None:
        data = train_pb2.DataSource(text=args.upload.read_bytes())
    else:
        data = train_pb2.DataSource(path=args.data)
    return train_pb2.JobSpec(
        name="train_and_watch example", device="cpu", data=data,
        scratch=train_pb2.ModelShape(n_layer=args.n_layer, n_head=2, n_embd=args.n_embd,
                                     block_size=args.block_size, tokenizer="byte"),
        training=train_pb2.TrainingParams(
            max_iters=args.max_iters, batch_size=8, learning_rate=3e-3,
            warmup_iters=min(10, args.max_iters // 10), log_interval=10,
            eval_interval=max(1, args.max_iters // 4), eval_iters=5, dtype="float32"))


def state(value: int) -> str:
    return train_pb2.JobState.Name(value).removeprefix("JOB_STATE_")


def show(message: train_pb2.WatchJobResponse, max_iters: int) -> None:
    """One line per event."""
    event = message.WhichOneof("event")
    if event == "snapshot":
        job = message.snapshot.job
        print(f"watching {job.job_id}: {state(job.state)}, step {job.step}/{job.max_iters}, "
              f"{len(message.snapshot.steps)} steps logged so far")
        for line in message.snapshot.recent_logs:  # empty without --logs
            print(f"log: {line.text}")
    elif event == "state_change":
        change = message.state_change
        print(f"state: {state(change.state)} ({change.reason})")
    elif event == "step":
        s = message.step
        print(f"step {s.step:>5}/{max_iters}  loss {s.loss:.4f}  lr {s.lr:.2e}  "
              f"{s.tokens_per_second:,.0f} tokens/s  eta {s.eta_seconds:.0f} s")
    elif event == "eval":
        e = message.eval
        print(f"eval at step {e.step}: train {e.train_loss:.4f}, val {e.val_loss:.4f}"
              f"{' (best so far)' if e.improved else ''}")
    elif event == "checkpoint":
        print(f"checkpoint {message.checkpoint.kind} saved at step {message.checkpoint.step}")
    elif event == "log":
        print(f"log: {message.log.text}")


def events(watch: WatchStream) -> Iterator[train_pb2.WatchJobResponse]:
    """The watch's messages, read by a thread: Ctrl-C then interrupts this program's wait on a
    queue, never a gRPC call (an interrupt inside one can leave the channel stuck)."""
    inbox: queue.Queue[train_pb2.WatchJobResponse | NanoLLMError | None] = queue.Queue()

    def read() -> None:
        try:
            for message in watch:
                inbox.put(message)
            inbox.put(None)
        except NanoLLMError as err:
            inbox.put(err)

    threading.Thread(target=read, daemon=True).start()
    while (item := inbox.get()) is not None:
        if isinstance(item, NanoLLMError):
            raise item
        yield item


def follow(client: Client, job_id: str, args: argparse.Namespace) -> None:
    """Print the job's events until it ends (the stream ends with the job)."""
    with client.watch_job(job_id, exclude_logs=not args.logs) as watch:
        for message in events(watch):
            show(message, args.max_iters)


def train(client: Client, args: argparse.Namespace, spec: train_pb2.JobSpec) -> train_pb2.Job:
    """Start the job and follow it to its end. Ctrl-C cancels it: the job saves its latest
    step first (ResumeJob would continue it from there), and the watch shows it stopping."""
    job = client.start_job(spec, timeout=CALL_TIMEOUT)
    print(f"started job {job.job_id}: {state(job.state)}")
    try:
        follow(client, job.job_id, args)
    except KeyboardInterrupt:
        print(f"\nCtrl-C: cancelling job {job.job_id}", flush=True)
        with contextlib.suppress(FailedPreconditionError):  # it ended in the meantime
            client.cancel_job(job.job_id, timeout=CALL_TIMEOUT)
        follow(client, job.job_id, args)
    return client.get_job(job.job_id, timeout=CALL_TIMEOUT)


def serve_and_generate(client: Client, args: argparse.Namespace, job_id: str) -> None:
    # LoadModel by job id serves its best checkpoint (else its latest); it returns once READY.
    name = args.model_name or job_id
    model = client.load_job_model(name, job_id, timeout=CALL_TIMEOUT)
    print(f"loaded model {model.name}: {model_admin_pb2.ModelState.Name(model.state)}, "
          f"{model.parameter_count:,} parameters")
    reply = client.generate(args.prompt, model=name, max_tokens=args.max_tokens, seed=1,
                            timeout=CALL_TIMEOUT)
    print(f"{name} continues {args.prompt!r}: {reply.choices[0].text!r}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        spec = job_spec(args)
    except OSError as err:
        print(f"train_and_watch.py: --upload: {err.strerror}: {args.upload}", file=sys.stderr)
        return 2
    try:
        # No default deadline: the watch lasts as long as the job; the other calls get one each.
        with Client(args.target, api_key=args.admin_key) as client:
            job = train(client, args, spec)
            if job.state == train_pb2.JOB_STATE_CANCELLED:
                return 130
            if job.state != train_pb2.JOB_STATE_SUCCEEDED:
                print(f"train_and_watch.py: job {job.job_id} ended {state(job.state)}: "
                      f"{job.reason}", file=sys.stderr)
                return 1
            serve_and_generate(client, args, job.job_id)
    except NanoLLMError as err:
        print(f"train_and_watch.py: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
