"""Headless Chromium for the web UI's tests: Debian's /usr/bin/chromium driven by Playwright
(`make test-deps` installs it; `playwright install` is never used, it downloads a browser).
Without it the tests skip on a developer machine and fail in CI (the CI variable is set).

    from ui_browser import browser, page, screenshot, ui_stack   # fixtures and helpers

    @pytest.fixture(scope="module")
    def stack(tmp_path_factory):
        with ui_stack(tmp_path_factory.mktemp("ui")) as running:
            yield running

    def test_x(page, stack):                  # `page` has the gateway's page open
        ...
        screenshot(page, "playground")        # test-artifacts/ui/playground.png

Every page refuses requests to other origins (the UI must work offline, with no CDN) and the
test fails on any script error or refused request.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from gateway_harness import GatewayThread
from server_harness import ServerThread, server_config, tiny_byte_checkpoint

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Screenshots for people to look at after a run; the folder is .gitignore'd.
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "ui"
PHONE = {"width": 375, "height": 812}
DESKTOP = {"width": 1280, "height": 900}
TIMEOUT_MS = 30_000


@dataclass
class UiStack:
    """A real gRPC server and the real gateway in front of it; a browser opens `url`."""

    server: ServerThread
    gateway: GatewayThread
    tmp: Path
    errors: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.gateway.url


@contextmanager
def ui_stack(tmp: Path, **config: Any) -> Iterator[UiStack]:
    """gpt-server's gRPC part on a tiny byte-level model ("gpt", context 256) and a gateway."""
    checkpoint = tiny_byte_checkpoint(tmp / "tiny", block_size=256)
    settings = server_config(checkpoint, tmp, jobs_root=tempfile.mkdtemp(dir=tmp), **config)
    with ServerThread(settings) as server, GatewayThread(server.target) as gateway:
        yield UiStack(server, gateway, tmp)


def _need_browser() -> None:
    reason = ""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: run `make test-deps` (Debian package chromium)"
    elif importlib.util.find_spec("playwright") is None:
        reason = "playwright is not installed: run `make install`"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(browser: Any, stack: UiStack, path: str = "/",
             viewport: dict[str, int] | None = None, storage: dict[str, str] | None = None
             ) -> Any:
    """A fresh browser context (its own localStorage, preset with `storage`) opened on `path`.
    Script errors and requests to other origins (refused) are collected in `stack.errors`."""
    context = browser.new_context(viewport=viewport or DESKTOP)
    context.set_default_timeout(TIMEOUT_MS)
    if storage:
        context.add_init_script("".join(f"localStorage.setItem({json.dumps(k)}, "
                                        f"{json.dumps(v)});" for k, v in storage.items()))

    def only_this_origin(route: Any) -> None:
        url = route.request.url
        if url.startswith(stack.url + "/") or url.startswith("data:"):
            route.continue_()
        else:
            stack.errors.append(f"request to another origin: {url}")
            route.abort()

    context.route("**/*", only_this_origin)
    page = context.new_page()
    page.on("pageerror", lambda error: stack.errors.append(f"script error: {error}"))
    page.on("console", lambda message: stack.errors.append(f"console: {message.text}")
            if message.type == "error" and "responded with a status" not in message.text
            else None)
    page.goto(stack.url + path)
    return page


@pytest.fixture
def page(browser: Any, stack: UiStack) -> Iterator[Any]:
    """The UI's start page; the test fails on a script error or a request elsewhere."""
    opened = new_page(browser, stack)
    yield opened
    opened.context.close()
    errors = list(stack.errors)
    stack.errors.clear()
    assert errors == []


def screenshot(page: Any, name: str) -> Path:
    """A full-page screenshot in test-artifacts/ui/<name>.png (scrolled to the top first)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.evaluate("window.scrollTo(0, 0)")
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def text(page: Any, selector: str) -> str:
    return str(page.text_content(selector) or "")


def wait_text(page: Any, selector: str, fragment: str) -> str:
    """Waits until the element's text contains `fragment`; returns the text."""
    page.wait_for_function(
        "([sel, frag]) => (document.querySelector(sel)?.textContent || '').includes(frag)",
        arg=[selector, fragment])
    return text(page, selector)


def set_knob(page: Any, selector: str, value: object) -> None:
    page.fill(selector, str(value))
