"""The web UI's models and API pages, API keys and phone widths, in headless Chromium against a
real gRPC server and gateway. The API page's examples are run as shown; a key is asked for
once, kept in the browser and sent with every call."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from ui_browser import (
    PHONE,
    UiStack,
    browser,
    new_page,
    page,
    screenshot,
    text,
    ui_stack,
    wait_text,
)

from nanollm.v1 import model_admin_pb2

__all__ = ["browser", "page"]  # fixtures used by name

USER_KEY = "user-secret"
ADMIN_KEY = "admin-secret"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiStack]:
    with ui_stack(tmp_path_factory.mktemp("ui_pages")) as running:
        yield running


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiStack]:
    with ui_stack(tmp_path_factory.mktemp("ui_keys"), api_keys=[USER_KEY],
                  admin_keys=[ADMIN_KEY]) as running:
        yield running


def model_row(page: Any, name: str) -> Any:
    row = page.locator(f"#models-table tr[data-model='{name}']")
    row.wait_for()
    return row


def cell(row: Any, label: str) -> str:
    return str(row.locator(f"td[data-label='{label}']").inner_text())


def test_models_page_load_default_unload(page: Any, stack: UiStack) -> None:
    page.goto(stack.url + "/#models")
    gpt = model_row(page, "gpt")
    info = stack.server.admin.GetModel(model_admin_pb2.GetModelRequest(name="gpt")).model
    assert cell(gpt, "Name") == "gpt default"
    assert cell(gpt, "State") == "READY"
    assert cell(gpt, "Size") == f"{info.parameter_count / 1000:.3g}k parameters"
    assert cell(gpt, "Shape") == "2 layers · 2 heads · 32 wide · 256 context"
    assert cell(gpt, "Device") == "cpu · float32"
    assert cell(gpt, "Requests") == "0 running · 0 waiting"

    page.fill("#load-name", "second")
    page.fill("#load-path", info.source_path)
    page.check("#load-default")
    page.click("#load-submit")
    assert wait_text(page, "#load-status", "READY") == "second is READY."
    wait_text(page, "#models-table tr[data-model='second'] td[data-label='Name']", "default")
    assert cell(model_row(page, "gpt"), "Name") == "gpt"
    screenshot(page, "models")

    model_row(page, "gpt").get_by_role("button", name="Set default").click()
    wait_text(page, "#models-table tr[data-model='gpt'] td[data-label='Name']", "default")
    page.once("dialog", lambda dialog: dialog.accept())
    model_row(page, "second").get_by_role("button", name="Unload").click()
    page.locator("#models-table tr[data-model='second']").wait_for(state="detached")

    # A path outside the model roots: the server's message, as the REST API gives it.
    page.fill("#load-name", "bad")
    page.fill("#load-path", "/etc")
    page.uncheck("#load-default")
    page.click("#load-submit")
    expected = httpx2.post(f"{stack.url}/v1/admin/models", json={"name": "bad", "path": "/etc",
                                                                 "set_default": False})
    message = expected.json()["error"]["message"]
    assert expected.status_code in (400, 403) and message
    assert wait_text(page, "#load-status", message) == message
    assert "error" in (page.get_attribute("#load-status", "class") or "")


def run_example(code: str, *command: str) -> str:
    env_path = f"{Path(sys.executable).parent}:/usr/bin:/bin"
    done = subprocess.run([*command, code], capture_output=True, text=True, timeout=60,
                          env={"PATH": env_path, "HOME": "/tmp"})
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_api_page_examples_run_as_shown(page: Any, stack: UiStack) -> None:
    page.goto(stack.url + "/#api")
    wait_text(page, "#ex-curl", stack.url)
    assert text(page, "#api-rest") == stack.url
    assert text(page, "#api-grpc") == stack.server.target
    assert "send none" in text(page, "#api-key-note")
    screenshot(page, "api")

    curl = run_example(text(page, "#ex-curl"), "bash", "-c")
    assert '"object":"chat.completion"' in curl and curl.rstrip().endswith("data: [DONE]")
    assert '"object":"text_completion"' in curl
    grpcurl = run_example(text(page, "#ex-grpcurl"), "bash", "-c")
    assert grpcurl.startswith("grpc.health.v1.Health\n") or "nanollm.v1.GenerateService" in \
        grpcurl
    assert '"text":' in grpcurl
    for example in ("#ex-openai", "#ex-python"):
        printed = run_example(text(page, example), sys.executable, "-c")
        assert printed.endswith("\n") and len(printed) > 1, example


def test_key_is_asked_once_kept_and_sent(browser: Any, keyed: UiStack) -> None:
    page = new_page(browser, keyed)
    # The playground lists models at once: 401, so the key dialog opens.
    page.wait_for_selector("#key-dialog[open]")
    assert text(page, "#key-reason").startswith("The server asks for a key: ")
    page.fill("#key-input", USER_KEY)
    page.click("#key-save")
    page.wait_for_selector("#key-dialog:not([open])", state="attached")
    assert page.evaluate("localStorage.getItem('nanollm.apiKey')") == USER_KEY
    assert text(page, "#key-button") == "API key ✓"

    page.fill("#pg-max-tokens", "8")
    page.click("#pg-generate")
    assert wait_text(page, "#stat-finish", " · ").startswith("length")
    assert text(page, "#stat-completion") == "8 tokens"

    # A user key reads the model list but cannot change it: the server's message is shown.
    page.goto(keyed.url + "/#models")
    model_row(page, "gpt")
    denied = httpx2.post(f"{keyed.url}/v1/admin/models", json={"name": "x", "path": "x"},
                         headers={"Authorization": f"Bearer {USER_KEY}"})
    assert denied.status_code == 403
    page.fill("#load-name", "x")
    page.fill("#load-path", "x")
    page.click("#load-submit")
    assert wait_text(page, "#load-status", denied.json()["error"]["message"])
    page.click("#key-button")
    page.fill("#key-input", ADMIN_KEY)
    page.click("#key-save")
    page.click("#load-submit")  # now refused for the path, not the key
    page.wait_for_function("!document.getElementById('load-status').textContent"
                           ".includes('admin key')")
    assert page.is_hidden("#models-error")

    # Kept across reloads: no dialog, the key goes with every call.
    page.goto(keyed.url + "/#playground")
    page.reload()
    page.wait_for_function("[...document.getElementById('pg-model').options]"
                           ".some(o => o.value === 'gpt')")
    assert page.locator("#key-dialog[open]").count() == 0
    page.click("#key-button")
    page.click("#key-forget")
    page.wait_for_function("localStorage.getItem('nanollm.apiKey') === null")
    assert text(page, "#key-button") == "API key"
    page.context.close()
    assert keyed.errors == []


# Elements (outside <pre>) whose box reaches past the right edge of the screen.
STICKING_OUT = """(root) => [...document.querySelectorAll(`${root} *`)]
  .filter((node) => !node.closest("pre") && node.getClientRects().length &&
                    node.getBoundingClientRect().right > window.innerWidth + 0.5)
  .map((node) => `${node.tagName.toLowerCase()}.${node.className}: ${node.textContent}`)"""


@pytest.mark.parametrize("name", ["playground", "training", "models", "api"])
def test_pages_fit_a_phone(browser: Any, stack: UiStack, name: str) -> None:
    page = new_page(browser, stack, f"/#{name}", viewport=PHONE)
    page.wait_for_selector(f"#page-{name}:not([hidden])")
    page.wait_for_load_state("networkidle")
    widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert widths[0] <= widths[1], f"{name}: {widths[0]} px wide on a {widths[1]} px screen"
    # Nor is anything cut off inside a box that scrolls sideways (a table's wrapper), except
    # code, which scrolls by design.
    assert page.evaluate(STICKING_OUT, f"#page-{name}") == [], name
    screenshot(page, f"phone-{name}")
    page.context.close()
    assert stack.errors == []


def test_models_on_a_phone_failed_load_and_long_path(browser: Any, stack: UiStack) -> None:
    # A folder name with no place to break a line, and a load that fails on a bad config.
    long_folder = stack.tmp / ("checkpoint_" + "x" * 50)
    shutil.copytree(stack.tmp / "tiny", long_folder)
    (stack.tmp / "broken").mkdir()
    (stack.tmp / "broken" / "config.json").write_text("{}")
    admin = f"{stack.url}/v1/admin/models"
    assert httpx2.post(admin, json={"name": "long", "path": str(long_folder)},
                       timeout=60).status_code == 200
    failed = httpx2.post(admin, json={"name": "broken", "path": "broken"}, timeout=60)
    assert failed.status_code == 400
    listed = {m["name"]: m for m in httpx2.get(admin).json()["models"]}
    assert listed["broken"]["state"] == "MODEL_STATE_FAILED"
    try:
        page = new_page(browser, stack, "/#models", viewport=PHONE)
        broken = model_row(page, "broken")
        model_row(page, "long")
        assert cell(broken, "State") == f"FAILED\n{listed['broken']['reason']}"
        # No kind is known for files that were never read: the path alone.
        assert cell(broken, "Source") == "broken"
        assert cell(model_row(page, "long"), "Source") == \
            f"nanollm: {listed['long']['source_path']}"
        assert page.evaluate(STICKING_OUT, "#page-models") == []
        screenshot(page, "phone-models-failed")
        page.context.close()
    finally:
        for name in ("long", "broken"):
            httpx2.delete(f"{admin}/{name}", timeout=60)
    assert stack.errors == []
