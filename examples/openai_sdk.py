"""The OpenAI Python SDK, unchanged, against nanoLLM's OpenAI-compatible REST gateway:
the models list, completions and chat, each plain and streamed, and a typed error.

    gpt-server &                            # gRPC on 127.0.0.1:50051 (the demo model)
    gpt-gateway &                           # REST on http://127.0.0.1:8080 in front of it
    python examples/openai_sdk.py
    python examples/openai_sdk.py --base-url http://host:8080/v1 --api-key KEY --model gpt

Only `base_url` (and, on a server with keys, `api_key`) differ from talking to OpenAI. The
model is a GPT-2-family model: chat is a transcript it continues (docs/gateway.md, "The chat
template"), so expect Shakespeare-flavoured text from the demo model, not an assistant. An
error the server sends back is one line on stderr, `<HTTP status> <SDK exception>: <message>`,
and exit code 1.
"""

from __future__ import annotations

import argparse
import sys
import time

import openai
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-url", default="http://127.0.0.1:8080/v1",
                   help="the gateway's /v1 URL (default: %(default)s)")
    p.add_argument("--api-key", default="not-needed",
                   help="an API key of the server (any text when it has none)")
    p.add_argument("--model", default="gpt",
                   help="a model name from GET /v1/models (default: %(default)s)")
    p.add_argument("--prompt", default="ROMEO:", help="text to continue (default: %(default)s)")
    p.add_argument("--max-tokens", type=int, default=40,
                   help="tokens per reply (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1,
                   help="seed of the sampled replies (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0,
                   help="seconds per request (default: %(default)s)")
    return p.parse_args(argv)


def models(client: OpenAI) -> None:
    for model in client.models.list():
        print(f"model: {model.id} (owned by {model.owned_by})")


def completions(client: OpenAI, args: argparse.Namespace) -> None:
    reply = client.completions.create(model=args.model, prompt=args.prompt,
                                      max_tokens=args.max_tokens, temperature=0)
    choice = reply.choices[0]
    usage = reply.usage
    assert usage is not None  # the gateway always reports usage on plain replies
    print(f"completion (greedy): {choice.text!r}")
    print(f"  finish_reason={choice.finish_reason}, prompt_tokens={usage.prompt_tokens}, "
          f"completion_tokens={usage.completion_tokens}, id={reply.id}")

    # Streamed: server-sent events, one chunk per piece of text; the last chunk (asked for
    # with include_usage) has no choices, only the usage.
    print(f"streamed completion (seed {args.seed}): ", end="", flush=True)
    started = time.perf_counter()
    first_token_ms = None
    chunks = 0
    for chunk in client.completions.create(model=args.model, prompt=args.prompt,
                                           max_tokens=args.max_tokens, seed=args.seed,
                                           stream=True,
                                           stream_options={"include_usage": True}):
        if chunk.choices:
            if first_token_ms is None:
                first_token_ms = 1000 * (time.perf_counter() - started)
            print(chunk.choices[0].text, end="", flush=True)
            chunks += 1
        elif chunk.usage is not None:
            print(f"\n  {chunks} chunks, first after {first_token_ms or 0:.0f} ms, "
                  f"usage: {chunk.usage.completion_tokens} completion tokens")


def chat(client: OpenAI, args: argparse.Namespace) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": "You are a character in a play."},
        {"role": "user", "content": "Who goes there?"},
    ]
    reply = client.chat.completions.create(model=args.model, messages=messages,
                                           max_tokens=args.max_tokens, seed=args.seed)
    answer = reply.choices[0]
    print(f"chat ({answer.message.role}, {answer.finish_reason}): "
          f"{answer.message.content!r}")

    print("streamed chat: ", end="", flush=True)
    text = ""
    for chunk in client.chat.completions.create(model=args.model, messages=messages,
                                                max_tokens=args.max_tokens, seed=args.seed,
                                                stream=True):
        delta = chunk.choices[0].delta.content or ""
        print(delta, end="", flush=True)
        text += delta
    print(f"\n  same reply as the plain call: {text == answer.message.content}")


def typed_error(client: OpenAI, args: argparse.Namespace) -> None:
    """The gateway answers with OpenAI error objects, so the SDK raises its own exceptions."""
    try:
        client.completions.create(model="no-such-model", prompt=args.prompt, max_tokens=4)
    except openai.NotFoundError as err:
        print(f"unknown model: {err.status_code} {type(err).__name__}: {err.body}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # max_retries=0: show a refusal as it is (the SDK would otherwise retry 429 and 5xx).
    client = OpenAI(base_url=args.base_url, api_key=args.api_key, timeout=args.timeout,
                    max_retries=0)
    try:
        models(client)
        completions(client, args)
        chat(client, args)
        typed_error(client, args)
    except openai.APIStatusError as err:
        # The body is the OpenAI error object: message, type, param, code.
        message = err.body.get("message") if isinstance(err.body, dict) else err.message
        print(f"openai_sdk.py: {err.status_code} {type(err).__name__}: {message}",
              file=sys.stderr)
        return 1
    except openai.APIConnectionError as err:
        print(f"openai_sdk.py: {args.base_url}: {err.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
