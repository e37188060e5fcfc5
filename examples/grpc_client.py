"""Generate over gRPC with the typed client (nanollm.client): a blocking call, a token stream,
a stream stopped early, and several streams at once with the asyncio client.

    gpt-server &                                    # the demo model, gRPC on 127.0.0.1:50051
    python examples/grpc_client.py
    python examples/grpc_client.py --target host:50051 --api-key KEY --prompt "JULIET:"

Every call carries a deadline (--timeout). A refused call (a bad key, an unknown model, a full
queue) is one line on stderr, `<status>: <message>`, and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time

from nanollm.client import AsyncClient, Client, NanoLLMError
from nanollm.v1 import generate_pb2

OTHER_PROMPTS = ("JULIET:", "HAMLET:")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", default="127.0.0.1:50051",
                   help="host:port of gpt-server (default: %(default)s)")
    p.add_argument("--api-key", help="sent as `authorization: Bearer <key>` (servers with keys)")
    p.add_argument("--model", default="", help="model name (default: the server's default)")
    p.add_argument("--prompt", default="ROMEO:", help="text to continue (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=40,
                   help="tokens per reply (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1,
                   help="seed of the sampled streams (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="deadline of each call in seconds (default: %(default)s)")
    return p.parse_args(argv)


def finish(reason: int) -> str:
    return generate_pb2.FinishReason.Name(reason)


def blocking_calls(args: argparse.Namespace) -> None:
    # A server with TLS: Client(target, tls=True, root_certificates=Path("ca.pem"), ...).
    with Client(args.target, api_key=args.api_key, timeout=args.timeout) as client:
        reply = client.generate(args.prompt, model=args.model, max_tokens=args.max_tokens,
                                temperature=0.0)
        choice = reply.choices[0]
        print(f"generate (greedy, model {reply.model}): {choice.text!r}")
        print(f"  {reply.usage.prompt_tokens} prompt + {reply.usage.completion_tokens} "
              f"completion tokens, {finish(choice.finish_reason)}, "
              f"{reply.timings.total_ms:.0f} ms")

        # Each message carries the new text; the last one also the finish reason, the seed
        # used and the timings.
        print(f"stream (seed {args.seed}): ", end="", flush=True)
        started = time.perf_counter()
        first_token_s = None
        pieces = []
        last = generate_pb2.StreamGenerateResponse()
        for msg in client.stream(args.prompt, model=args.model, max_tokens=args.max_tokens,
                                 seed=args.seed):
            if first_token_s is None:
                first_token_s = time.perf_counter() - started
            print(msg.text, end="", flush=True)
            pieces.append(msg.text)
            last = msg
        print(f"\n  {last.usage.completion_tokens} tokens, {finish(last.finish_reason)}, "
              f"seed {last.seed}, first token after {1000 * (first_token_s or 0):.0f} ms")
        print(f"stream text: {''.join(pieces)!r}")

        # Leaving the `with` block cancels the call: the server stops generating for it.
        with client.stream(args.prompt, model=args.model, max_tokens=args.max_tokens,
                           seed=args.seed) as stream:
            early = [msg.text for msg in itertools.islice(stream, 3)]
        print(f"stopped after {len(early)} messages: {''.join(early)!r}")


async def concurrent_streams(args: argparse.Namespace) -> None:
    """One stream per prompt, all at once: the server decodes them in one batch, and each gets
    the text it would get alone."""
    async with AsyncClient(args.target, api_key=args.api_key, timeout=args.timeout) as client:

        async def one(prompt: str) -> tuple[str, int]:
            text, pieces = "", 0
            async for msg in client.stream(prompt, model=args.model,
                                           max_tokens=args.max_tokens, seed=args.seed):
                text += msg.text
                pieces += 1
            return text, pieces

        prompts = (args.prompt, *OTHER_PROMPTS)
        results = await asyncio.gather(*(one(prompt) for prompt in prompts))
        for prompt, (text, pieces) in zip(prompts, results, strict=True):
            print(f"async {prompt} ({pieces} messages): {text!r}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        blocking_calls(args)
        asyncio.run(concurrent_streams(args))
    except NanoLLMError as err:
        print(f"grpc_client.py: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
