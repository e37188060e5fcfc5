"""What the web UI's playground shows when a request fails, in headless Chromium against a real
gRPC server and gateway: the server's own message naming the control (out-of-range values are
the server's to judge, so the button and Ctrl+Enter behave alike), a full queue with when to
try again, a server that is gone, and the model menu filled in once a key is saved."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from gateway_harness import GatewayThread
from server_harness import queue_held
from ui_browser import UiStack, browser, new_page, screenshot, text, ui_stack, wait_text

__all__ = ["browser"]  # a fixture used by name

USER_KEY = "user-secret"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiStack]:
    """Keys, one batch slot and one queue place: a third request is refused with 429."""
    with ui_stack(tmp_path_factory.mktemp("ui_errors"), api_keys=[USER_KEY],
                  max_batch_size=1, max_queue=1, max_tokens_limit=100_000) as running:
        yield running


@pytest.fixture
def keyed_page(browser: Any, stack: UiStack) -> Iterator[Any]:
    """The playground with the user key already saved in the browser."""
    opened = new_page(browser, stack, storage={"nanollm.apiKey": USER_KEY})
    yield opened
    opened.context.close()
    errors = list(stack.errors)
    stack.errors.clear()
    assert errors == []


def generate(page: Any) -> str:
    """Clicks Generate and waits for the end; the error box's text ("" when hidden)."""
    page.click("#pg-generate")
    page.wait_for_function("!document.getElementById('stat-finish').textContent"
                           ".startsWith('running')")
    page.wait_for_function("!document.getElementById('pg-generate').disabled")
    return text(page, "#pg-error") if page.is_visible("#pg-error") else ""


def rest_error(stack: UiStack, **body: object) -> str:
    reply = httpx2.post(f"{stack.url}/v1/completions", timeout=30,
                        json={"model": "gpt", "prompt": "ROMEO:", **body},
                        headers={"Authorization": f"Bearer {USER_KEY}"})
    assert reply.status_code == 400
    return str(reply.json()["error"]["message"])


def test_out_of_range_values_show_the_servers_message(keyed_page: Any, stack: UiStack) -> None:
    page = keyed_page
    page.fill("#pg-max-tokens", "5")
    page.click("details.more > summary")
    for control, field, value in [("#pg-temperature", "temperature", "-1"),
                                  ("#pg-top-p", "top_p", "0"), ("#pg-n", "n", "20"),
                                  ("#pg-presence", "presence_penalty", "3")]:
        page.fill(control, value)
        message = rest_error(stack, max_tokens=5, **{field: json.loads(value)})
        assert generate(page) == f"{message} ({field})"
        assert "invalid" in (page.get_attribute(control, "class") or "")
        assert text(page, "#stat-finish").startswith("error · ")
        # No empty "Choice 1 ... 20" boxes under the message.
        assert page.locator("#pg-outputs .output").count() == 0
        page.fill(control, {"n": "1", "top_p": "1"}.get(field, "0"))
    assert generate(page) == ""
    assert text(page, "#stat-completion") == "5 tokens"

    # Text a number box cannot read would be sent as "unset": the control is named instead.
    page.fill("#pg-temperature", "")
    page.click("#pg-temperature")
    page.keyboard.type("1e")
    page.keyboard.press("Enter")  # Enter in a box sends the form
    assert wait_text(page, "#pg-error", "number") == \
        "Temperature: enter a number (temperature)."
    assert "invalid" in (page.get_attribute("#pg-temperature", "class") or "")


def test_full_queue_says_when_to_try_again(keyed_page: Any, stack: UiStack) -> None:
    with queue_held(stack.server, USER_KEY):
        refused = httpx2.post(f"{stack.url}/v1/completions", timeout=30,
                              json={"model": "gpt", "prompt": "ROMEO:", "max_tokens": 5},
                              headers={"Authorization": f"Bearer {USER_KEY}"})
        keyed_page.fill("#pg-max-tokens", "5")
        message = generate(keyed_page)
    assert refused.status_code == 429
    wait = int(refused.headers["Retry-After"])
    assert message == f"{refused.json()['error']['message']} (try again in {wait} s)"
    screenshot(keyed_page, "playground-queue-full")
    keyed_page.context.close()
    stack.errors[:] = [e for e in stack.errors if "status of 429" not in e]


def test_a_server_that_is_gone_is_named(browser: Any, stack: UiStack) -> None:
    # A gateway of its own, stopped once the page has loaded.
    gateway = GatewayThread(stack.server.target)
    alone = UiStack(stack.server, gateway, stack.tmp)
    page = new_page(browser, alone, storage={"nanollm.apiKey": USER_KEY})
    page.wait_for_function("[...document.getElementById('pg-model').options]"
                           ".some(o => o.value === 'gpt')")
    gateway.close()
    host = gateway.url.removeprefix("http://")
    message = generate(page)
    assert message.startswith(f"Cannot reach the server at {host} (")
    assert "undefined" not in message
    page.context.close()


def test_saving_a_key_fills_the_model_menu(browser: Any, stack: UiStack) -> None:
    page = new_page(browser, stack)
    page.wait_for_selector("#key-dialog[open]")
    page.click("#key-cancel")  # dismissed: the menu holds only the default
    page.wait_for_selector("#key-dialog:not([open])", state="attached")
    assert page.evaluate("[...document.getElementById('pg-model').options]"
                         ".map(o => o.value)") == [""]
    page.click("#key-button")
    page.fill("#key-input", USER_KEY)
    page.keyboard.press("Enter")  # Enter in the box saves
    page.wait_for_function("[...document.getElementById('pg-model').options]"
                           ".some(o => o.value === 'gpt')")
    page.context.close()
    assert [e for e in stack.errors if "status of 401" not in e] == []
    stack.errors.clear()
