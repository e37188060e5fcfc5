"""The web UI's playground in headless Chromium against a real gRPC server and gateway: a
completion streams into the page piece by piece and matches the server's own greedy text,
usage and speed are shown, chat keeps the conversation (regenerate replaces the last reply),
Stop ends a generation, errors name the bad control, and model text is shown as text."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from server_harness import greedy
from ui_browser import UiStack, browser, page, screenshot, text, ui_stack, wait_text

__all__ = ["browser", "page"]  # fixtures used by name

# Records the output's text length at every change: more than one distinct length means the
# text was drawn as it arrived, not at the end.
WATCH_OUTPUT = """(selector) => {
  window.lengths = [];
  const node = document.querySelector(selector);
  new MutationObserver(() => window.lengths.push(node.textContent.length))
    .observe(node, {subtree: true, childList: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiStack]:
    with ui_stack(tmp_path_factory.mktemp("ui_playground")) as running:
        yield running


def sampling(page: Any, max_tokens: int, temperature: float = 0.0, **checks: bool) -> None:
    page.fill("#pg-max-tokens", str(max_tokens))
    page.fill("#pg-temperature", str(temperature))
    page.click("details.more > summary")
    for name, on in {"stop-at-eos": False, **checks}.items():
        page.set_checked(f"#pg-{name}", on)


def finished(page: Any) -> str:
    """Waits for the generation to end; its finish line ("length · 0.31 s")."""
    page.wait_for_function("!document.getElementById('stat-finish').textContent"
                           ".startsWith('running')")
    page.wait_for_function("!document.getElementById('pg-generate').disabled")
    return text(page, "#stat-finish")


def test_completion_streams_into_the_page(page: Any, stack: UiStack) -> None:
    direct = stack.server.generate.Generate(greedy("ROMEO:", max_tokens=200))
    page.fill("#pg-prompt", "ROMEO:")
    sampling(page, 200)
    page.evaluate(WATCH_OUTPUT, "#pg-outputs")
    page.click("#pg-generate")
    assert finished(page).startswith("length · ")
    assert text(page, "#pg-outputs .output-text") == direct.choices[0].text
    lengths = page.evaluate("window.lengths")
    assert len({n for n in lengths if n > 0}) >= 5, lengths  # drawn piece by piece
    usage = direct.usage
    assert text(page, "#stat-prompt") == f"{usage.prompt_tokens} tokens"
    assert text(page, "#stat-completion") == "200 tokens"
    assert text(page, "#stat-total") == f"{usage.prompt_tokens + 200} tokens"
    assert re.fullmatch(r"\d+\.\d tokens/s", text(page, "#stat-speed"))
    assert re.fullmatch(r"\d+ ms", text(page, "#stat-ttft"))
    screenshot(page, "playground-completion")

    # Regenerate sends the same request again: greedy gives the same text.
    page.fill("#pg-prompt", "something else")
    page.click("#pg-regenerate")
    assert finished(page).startswith("length")
    assert text(page, "#pg-outputs .output-text") == direct.choices[0].text


def chat_reply(stack: UiStack, messages: list[dict[str, str]], max_tokens: int) -> str:
    body = {"model": "gpt", "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "top_p": 1, "top_k": 200, "presence_penalty": 0, "frequency_penalty": 0,
            "repetition_penalty": 1, "n": 1, "stop_at_eos": False}
    reply = httpx2.post(f"{stack.url}/v1/chat/completions", json=body, timeout=60)
    return str(reply.json()["choices"][0]["message"]["content"])


def test_chat_keeps_the_conversation_and_regenerates(page: Any, stack: UiStack) -> None:
    page.check("input[name=mode][value=chat]")
    assert text(page, "#pg-generate") == "Send"
    sampling(page, 24)
    system = {"role": "system", "content": "You are a helpful assistant."}
    page.fill("#pg-user", "Hello!")
    page.click("#pg-generate")
    finished(page)
    first = chat_reply(stack, [system, {"role": "user", "content": "Hello!"}], 24)
    roles = page.locator("#pg-transcript .msg-role").all_text_contents()
    assert roles == ["You", "Assistant"]
    bubbles = page.locator("#pg-transcript .msg-text").all_text_contents()
    assert bubbles == ["Hello!", first]
    assert page.input_value("#pg-user") == ""

    page.click("#pg-regenerate")  # replaces the reply (greedy: the same one)
    finished(page)
    assert page.locator("#pg-transcript .msg-text").all_text_contents() == ["Hello!", first]

    page.fill("#pg-user", "And then?")
    page.keyboard.press("Control+Enter")
    finished(page)
    second = chat_reply(stack, [system, {"role": "user", "content": "Hello!"},
                                {"role": "assistant", "content": first},
                                {"role": "user", "content": "And then?"}], 24)
    assert page.locator("#pg-transcript .msg-text").all_text_contents() == [
        "Hello!", first, "And then?", second]
    assert re.fullmatch(r"\d+ tokens", text(page, "#stat-prompt"))
    screenshot(page, "playground-chat")


def test_stop_ends_a_generation(page: Any, stack: UiStack) -> None:
    page.fill("#pg-prompt", "R")
    sampling(page, 250)
    # Press Stop as soon as the first text shows.
    page.evaluate("""() => {
      const out = document.getElementById('pg-outputs');
      new MutationObserver((_, observer) => {
        if (out.textContent.length) { observer.disconnect();
                                      document.getElementById('pg-stop-button').click(); }
      }).observe(out, {subtree: true, childList: true, characterData: true});
    }""")
    page.click("#pg-generate")
    assert finished(page).startswith("stopped · ")
    assert text(page, "#stat-total") == "–"  # the usage comes last, and never came
    shown = len(text(page, "#pg-outputs .output-text"))
    assert 0 < shown < 250
    assert page.is_disabled("#pg-stop-button") and page.is_enabled("#pg-generate")


def test_a_rejected_request_names_its_control(page: Any, stack: UiStack) -> None:
    page.fill("#pg-prompt", "x" * 300)  # longer than the model's context of 256
    sampling(page, 10)
    page.click("#pg-generate")
    finished(page)
    message = wait_text(page, "#pg-error", "prompt")
    assert message.endswith("(prompt)") and "256" in message
    assert "invalid" in (page.get_attribute("#pg-prompt", "class") or "")
    # Fixing it clears the error.
    page.fill("#pg-prompt", "ROMEO:")
    page.click("#pg-generate")
    finished(page)
    assert page.is_hidden("#pg-error")
    assert "invalid" not in (page.get_attribute("#pg-prompt", "class") or "")


def test_choices_and_text_that_looks_like_html(page: Any, stack: UiStack) -> None:
    prompt = '<img src=x onerror="window.pwned=1"><b>bold</b>'
    page.fill("#pg-prompt", prompt)
    sampling(page, 6, temperature=1.0, echo=True)
    page.fill("#pg-n", "2")
    page.click("#pg-generate")
    finished(page)
    outputs = page.locator("#pg-outputs .output-text").all_text_contents()
    assert len(outputs) == 2 and all(o.startswith(prompt) for o in outputs), outputs
    assert page.locator("#pg-outputs .output-label").all_text_contents() == ["Choice 1",
                                                                             "Choice 2"]
    assert page.locator("#pg-outputs img, #pg-outputs b").count() == 0
    assert page.evaluate("window.pwned") is None
    assert text(page, "#stat-completion") == "12 tokens"  # 2 choices of 6


# A token's tooltip: its log-probability, then the most likely tokens at its place (3, and the
# sampled one; completions show tokens of the same text, such as bytes of a split character, once).
TITLE = (r"log-probability -?\d+\.\d{3} \(p = \d\.\d{3}\)\n"
         r"most likely: (\"[^\n]*\" \d\.\d{3}(, |$)){1,4}")


def test_log_probabilities_per_token(page: Any, stack: UiStack) -> None:
    page.fill("#pg-prompt", "ROMEO:")
    sampling(page, 8, logprobs=True)
    page.click("#pg-generate")
    finished(page)
    tokens = page.locator("#pg-outputs .tok")
    titles = [tokens.nth(i).get_attribute("title") for i in range(tokens.count())]
    assert titles and all(re.fullmatch(TITLE, t or "") for t in titles), titles
    # One span per token whose text stands alone (a byte cut from a character does not).
    assert 1 <= len(titles) <= 8
    assert all(t in text(page, "#pg-outputs .output-text") for t in tokens.all_text_contents())


def test_echo_with_log_probabilities_scores_the_prompt(page: Any, stack: UiStack) -> None:
    """Echo and log-probabilities together: the prompt's tokens are scored (the request goes
    unstreamed); its first token has no log-probability, every other token has one."""
    page.fill("#pg-prompt", "ROMEO:")
    sampling(page, 4, logprobs=True, echo=True)
    page.click("#pg-generate")
    assert finished(page).startswith("length · ")
    assert text(page, "#pg-error") == ""
    tokens = page.locator("#pg-outputs .tok")
    titles = [tokens.nth(i).get_attribute("title") for i in range(tokens.count())]
    assert "".join(tokens.all_text_contents()).startswith("ROMEO:")
    assert titles[0] is None and len(titles) == 6 + 4
    assert all(re.fullmatch(TITLE, t or "") for t in titles[1:]), titles


def test_chat_reply_tokens_without_streaming(page: Any, stack: UiStack) -> None:
    # A reply's leading space is trimmed while its first token keeps it: the spans still
    # spell the reply, each with its log-probability.
    page.check("input[name=mode][value=chat]")
    sampling(page, 8, logprobs=True, stream=False)
    page.fill("#pg-user", "Hello!")
    page.click("#pg-generate")
    finished(page)
    reply = page.locator("#pg-transcript .msg.assistant .msg-text")
    tokens = reply.locator(".tok")
    assert tokens.count() >= 1
    assert "".join(tokens.all_text_contents()) == reply.inner_text()
    assert all(re.fullmatch(TITLE, t or "")
               for t in [tokens.nth(i).get_attribute("title") for i in range(tokens.count())])
