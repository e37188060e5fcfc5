"""Talk to a running nanoLLM gRPC server with the typed Python client (nanollm.client).

    gpt-server &                                   # the demo model on 127.0.0.1:50051
    python clients/python_client.py
    python clients/python_client.py --target host:50051 --api-key KEY --admin-key ADMIN \
        --prompt "JULIET:" --max-tokens 60

It tokenizes the prompt, generates a greedy completion, streams a seeded one piece by piece,
runs three streams at once with the asyncio client, shows how a bad request comes back
(INVALID_ARGUMENT with one field violation per bad field), and lists the loaded models
(any key may read it; setting the default model needs the admin key).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from nanollm.client import (
    AsyncClient,
    Client,
    InvalidArgumentError,
    NanoLLMError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from nanollm.v1 import generate_pb2, model_admin_pb2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", default="127.0.0.1:50051", help="host:port of the gRPC server")
    p.add_argument("--api-key", help="sent as `authorization: Bearer <key>`")
    p.add_argument("--admin-key", help="key for the model admin calls (ListModels)")
    p.add_argument("--prompt", default="ROMEO:")
    p.add_argument("--max-tokens", type=int, default=40)
    p.add_argument("--timeout", type=float, default=60.0, help="deadline of each call (s)")
    return p.parse_args(argv)


def sync_examples(args: argparse.Namespace) -> None:
    with Client(args.target, api_key=args.api_key, timeout=args.timeout) as client:
        tokens = client.tokenize(args.prompt)
        print(f"tokenize: {tokens.count} tokens {list(tokens.token_ids)} "
              f"(model {tokens.model})")

        reply = client.generate(args.prompt, max_tokens=args.max_tokens, temperature=0.0)
        choice = reply.choices[0]
        print(f"generate (greedy, {reply.usage.completion_tokens} tokens, "
              f"{generate_pb2.FinishReason.Name(choice.finish_reason)}, "
              f"{reply.timings.total_ms:.0f} ms): {choice.text!r}")

        print("stream (seed 1): ", end="", flush=True)
        pieces = []
        last = generate_pb2.StreamGenerateResponse()
        for msg in client.stream(args.prompt, max_tokens=args.max_tokens, seed=1):
            print(msg.text, end="", flush=True)
            pieces.append(msg.text)
            last = msg
        print(f"\nstream done: {generate_pb2.FinishReason.Name(last.finish_reason)}, "
              f"seed {last.seed}, {last.usage.completion_tokens} tokens, "
              f"queue {last.timings.queue_ms:.1f} ms, prefill {last.timings.prefill_ms:.1f} ms")
        print(f"stream seed 1: {''.join(pieces)!r}")

        try:
            client.generate("", max_tokens=0, top_p=1.5)
        except InvalidArgumentError as err:
            print(f"bad request: {err.code.name}")
            for violation in err.field_violations:
                print(f"  {violation.field}: {violation.description}")

        # Any key may read the model list; changing it takes the admin key.
        models = client.list_models()
        for model in models.models:
            print(f"model {model.name}: {model_admin_pb2.ModelState.Name(model.state)}, "
                  f"{model.parameter_count} parameters, {model.device}/{model.dtype}"
                  f"{' (default)' if model.is_default else ''}")

    with Client(args.target, api_key=args.admin_key or args.api_key,
                timeout=args.timeout) as admin:
        try:
            admin.set_default_model(models.default_model)
        except (UnauthenticatedError, PermissionDeniedError) as err:
            print(f"set default model: {err.code.name} (pass --admin-key)")
        else:
            print(f"set default model: {models.default_model}")


async def async_examples(args: argparse.Namespace) -> None:
    """Three seeded streams at once: the server batches them; each gets its own text."""
    async with AsyncClient(args.target, api_key=args.api_key, timeout=args.timeout) as client:

        async def one(seed: int) -> str:
            parts = [msg.text async for msg in client.stream(
                args.prompt, max_tokens=args.max_tokens, seed=seed)]
            return "".join(parts)

        texts = await asyncio.gather(*(one(seed) for seed in (1, 2, 3)))
        for seed, text in zip((1, 2, 3), texts, strict=True):
            print(f"async stream seed {seed}: {text!r}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        sync_examples(args)
        asyncio.run(async_examples(args))
    except NanoLLMError as err:
        print(f"python_client.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
