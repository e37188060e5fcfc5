"""The Python API in one process, no server: load a model, generate, stream, sample several
completions at once, and prepare a dataset to train on.

    python examples/python_api.py                        # the shipped demo model, CPU or GPU
    python examples/python_api.py --checkpoint out/demo/best --prompt "JULIET:" --seed 3
    python examples/python_api.py --data mybook.txt --out-dir data/mybook --tokenizer byte

The same steps as nanoLLM_gpt's README ("Programmatic Model Loading", "Custom Inference
Pipeline", "Custom Data Preparation") with this project's names: `ModelLoader.load` returns the
model with its tokenizer, `InferencePipeline` generates from it with a `GenerationConfig`, and
`DataPreparer.prepare_data` turns a text file into `train.bin` / `val.bin`. Bad input (a missing
checkpoint or text file, a bad setting) is one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from nanollm import ConfigError, DataPreparer, GenerationConfig, InferencePipeline, ModelLoader
from nanollm.checkpoint import CheckpointError
from nanollm.dataset import open_dataset
from nanollm.loader import describe

CORPUS = Path(str(resources.files("nanollm") / "assets" / "corpus" / "shakespeare.txt"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", help="checkpoint folder, HF GPT-2 folder or nanoGPT "
                       "ckpt.pt (default: the shipped demo model)")
    model.add_argument("--model-type", help="a GPT-2 preset found in a local HF folder or cache")
    p.add_argument("--device", default="auto",
                   help="'auto', 'cpu', 'cuda' or 'cuda:N' (default: %(default)s)")
    p.add_argument("--prompt", default="ROMEO:", help="text to continue (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=60,
                   help="tokens to generate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1,
                   help="makes the text reproducible (default: %(default)s)")
    p.add_argument("--samples", type=int, default=3,
                   help="completions sampled as one batch (default: %(default)s)")
    p.add_argument("--data", type=Path, default=CORPUS,
                   help="text file (or folder) to prepare (default: the bundled corpus)")
    p.add_argument("--out-dir", type=Path, default=Path("data/shakespeare-gpt2"),
                   help="where the prepared dataset goes (default: %(default)s)")
    p.add_argument("--tokenizer", default="gpt2",
                   help="'gpt2' (BPE), 'byte' or 'char' (default: %(default)s)")
    return p.parse_args(argv)


def inference(args: argparse.Namespace) -> None:
    # ModelLoader.load finds the weights (checkpoint, HF folder, preset; none: the demo model)
    # and returns the model ready for inference, with the tokenizer its checkpoint names.
    loaded = ModelLoader.load(checkpoint_path=args.checkpoint, model_type=args.model_type,
                              device=args.device)
    print(f"model: {describe(loaded)}")
    # InferencePipeline(device=...).load_model(...) does both steps; here the pipeline wraps
    # the model loaded above instead of reading it again.
    pipeline = InferencePipeline.from_loaded(loaded)

    config = GenerationConfig(max_new_tokens=args.max_tokens, temperature=0.9, top_p=0.95,
                              seed=args.seed)
    text = pipeline.generate(args.prompt, config)
    print(f"generate (seed {args.seed}): {text!r}")

    # A stream yields text pieces as they are sampled; with the same seed it is the same text.
    print("stream: ", end="", flush=True)
    stream = pipeline.stream(args.prompt, config)
    pieces = []
    for piece in stream:
        print(piece, end="", flush=True)
        pieces.append(piece)
    done = stream.completion
    assert done is not None  # the stream is exhausted
    print(f"\nstream finished: {done.finish_reason}, {done.completion_tokens} tokens, "
          f"same text as generate: {''.join(pieces) == text}")

    # num_samples rows decode together in one batch; sample i uses seed + i.
    samples = GenerationConfig(max_new_tokens=args.max_tokens // 2, temperature=1.0,
                               seed=args.seed, num_samples=args.samples)
    for i, completion in enumerate(pipeline.generate_detailed(args.prompt, samples)):
        print(f"sample {i} (seed {completion.seed}, {completion.completion_tokens} tokens, "
              f"{completion.finish_reason}): {completion.text!r}")


def prepare_data(args: argparse.Namespace) -> None:
    # Tokenized into train.bin / val.bin (the last 10% is validation); a folder already
    # prepared from the same text with the same settings is reused, not rebuilt.
    folder = DataPreparer(args.tokenizer).prepare_data(
        args.data, args.out_dir, train_val_split=0.1, block_size=256, show_progress=False)
    dataset = open_dataset(folder)
    print(f"dataset: {folder}: {len(dataset.train)} train and {len(dataset.val)} val tokens "
          f"({dataset.tokenizer} tokenizer, {dataset.dtype} ids)")
    print(f"train on it: gpt-train --data-path {folder} --max-iters 500")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        inference(args)
        prepare_data(args)
    except (CheckpointError, ConfigError, OSError, ValueError) as err:
        print(f"python_api.py: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
