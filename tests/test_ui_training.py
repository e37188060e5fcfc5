"""The web UI's training page in headless Chromium against a real gRPC server (TrainService runs
real job processes) and gateway: start a tiny byte-level job on an uploaded file and watch its
chart, progress and log update live, load what it trained with one click and generate from it;
cancel a job and resume it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_harness import greedy
from train_job_helpers import small_text
from ui_browser import PHONE, UiStack, browser, page, screenshot, text, ui_stack, wait_text

__all__ = ["browser", "page"]  # fixtures used by name

NAME = "<i>tiny</i> & co"  # a label that looks like HTML; shown as text
SERVED = "i-tiny-i-co"  # the model name the page offers for it


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiStack]:
    with ui_stack(tmp_path_factory.mktemp("ui_training")) as running:
        yield running


def fill_tiny_job(page: Any, name: str, max_iters: int, **fields: object) -> None:
    """The form's "Tiny" preset (2 layers, byte tokenizer) with short, frequent evaluations."""
    page.goto(page.url.split("#")[0] + "#training")
    page.fill("#tr-name", name)
    values = {"tr-max-iters": max_iters, "tr-batch-size": 4, "tr-eval-interval": 10,
              "tr-eval-iters": 2, "tr-log-interval": 1, "tr-warmup": 2}
    values.update(fields)
    for control, value in values.items():
        page.fill(f"#{control}", str(value))
    page.click("details.more details.more > summary")
    page.select_option("#tr-device", "cpu")
    page.select_option("#tr-dtype", "float32")


# Records the chart's count of train points at each redraw.
WATCH_CHART = """() => {
  window.chartPoints = [];
  const chart = document.getElementById('tr-chart');
  new MutationObserver(() => window.chartPoints.push(Number(chart.dataset.trainPoints)))
    .observe(chart, {attributes: true, attributeFilter: ['data-train-points']});
}"""


def points(page: Any, kind: str) -> int:
    return int(page.get_attribute("#tr-chart", f"data-{kind}-points") or 0)


def state(page: Any) -> str:
    return text(page, "#tr-job-state")


def test_train_watch_load_and_generate(page: Any, stack: UiStack, tmp_path: Path) -> None:
    corpus = small_text(tmp_path, "corpus.txt", 50_000)
    fill_tiny_job(page, NAME, 40)
    page.set_input_files("#tr-file", str(corpus))
    page.evaluate(WATCH_CHART)
    page.click("#tr-start")

    # The chart follows the job while it runs, redrawn as steps arrive.
    page.wait_for_function("Number(document.getElementById('tr-chart').dataset.trainPoints) > 0")
    screenshot(page, "training-running")
    page.wait_for_function("document.getElementById('tr-job-state').textContent === "
                           "'SUCCEEDED'", timeout=120_000)
    seen = page.evaluate("window.chartPoints")
    assert len(set(seen)) >= 3 and seen == sorted(seen), seen
    assert points(page, "train") == 40 and points(page, "val") == 4
    caption = text(page, "#tr-chart-caption")
    assert caption.startswith("Latest: train loss ")
    assert caption.endswith("(40 logged steps, 4 evaluations).")
    assert page.locator("#tr-chart polyline.train").count() == 1
    assert text(page, "#tr-step") == "40 / 40" and text(page, "#tr-eta") == "done"
    assert page.evaluate("[document.getElementById('tr-progress').value, "
                         "document.getElementById('tr-progress').max]") == [40, 40]
    assert "step 40/40" in text(page, "#tr-log")
    assert text(page, "#tr-job-title") == NAME
    assert page.locator("#tr-job-title i, #tr-jobs i").count() == 0
    assert text(page, "#tr-jobs tbody tr strong") == NAME
    job_id = page.get_attribute("#tr-jobs tbody tr", "data-job")

    # One click serves what it trained; the playground then generates from it.
    assert page.input_value("#tr-model-name") == SERVED
    page.click("#tr-load")
    assert wait_text(page, "#tr-load-status", "Served as") == \
        f"Served as {SERVED}. Generate with it"
    screenshot(page, "training-succeeded")
    page.click("#tr-try")
    assert page.input_value("#pg-model") == SERVED
    page.fill("#pg-prompt", "ROMEO:")
    page.fill("#pg-max-tokens", "30")
    page.fill("#pg-temperature", "0")
    page.click("details.more > summary")
    page.uncheck("#pg-stop-at-eos")
    page.click("#pg-generate")
    wait_text(page, "#stat-finish", "length")
    request = greedy("ROMEO:", max_tokens=30)
    request.model = SERVED
    direct = stack.server.generate.Generate(request)
    assert direct.model == SERVED
    assert text(page, "#pg-outputs .output-text") == direct.choices[0].text

    # The models page lists it, loaded from the job.
    page.goto(page.url.split("#")[0] + "#models")
    row = page.locator(f"#models-table tr[data-model='{SERVED}']")
    row.wait_for()
    assert "READY" in row.inner_text() and str(job_id) in row.inner_text()


def test_cancel_then_resume(page: Any, stack: UiStack) -> None:
    fill_tiny_job(page, "long run", 100_000)
    page.check("#tr-form input[name=data][value=path]")
    assert page.input_value("#tr-data-path") == "shakespeare.txt"  # the bundled corpus
    page.click("#tr-start")
    page.wait_for_function("Number(document.getElementById('tr-chart').dataset.trainPoints) "
                           ">= 3", timeout=120_000)
    page.wait_for_function("!document.getElementById('tr-cancel').disabled")
    page.click("#tr-cancel")
    page.wait_for_function("document.getElementById('tr-job-state').textContent === "
                           "'CANCELLED'", timeout=60_000)
    stopped = int(text(page, "#tr-step").split(" / ")[0])
    assert page.is_enabled("#tr-resume") and page.is_disabled("#tr-cancel")

    page.click("#tr-resume")
    page.wait_for_function(f"Number(document.getElementById('tr-step').textContent"
                           f".split(' / ')[0]) > {stopped}", timeout=120_000)
    assert state(page) == "RUNNING"
    # The resumed run's chart continues the first one: each step once.
    assert points(page, "train") >= stopped
    page.click("#tr-cancel")
    page.wait_for_function("document.getElementById('tr-job-state').textContent === "
                           "'CANCELLED'", timeout=60_000)
    screenshot(page, "training-cancelled")

    # On a phone the chart is drawn for its width: its labels stay readable (not scaled down
    # to half their size with the picture).
    page.set_viewport_size(PHONE)
    page.wait_for_function("document.getElementById('tr-chart').viewBox.baseVal.width < 400")
    label_px = page.evaluate("Math.min(...[...document.querySelectorAll('#tr-chart text')]"
                             ".map(t => t.getBoundingClientRect().height))")
    assert label_px >= 10, label_px
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    screenshot(page, "phone-training-cancelled")



def test_an_empty_source_is_named_before_anything_is_sent(page: Any, stack: UiStack) -> None:
    fill_tiny_job(page, "nothing", 10)
    page.check("#tr-form input[name=data][value=url]")
    page.click("#tr-start")
    assert wait_text(page, "#tr-form-error", "URL") == "Enter the URL of a text file."
    page.check("#tr-form input[name=data][value=path]")
    page.fill("#tr-data-path", " ")
    page.click("#tr-start")
    assert wait_text(page, "#tr-form-error", "dataset") == "Name a dataset on the server."
    assert page.is_hidden("#tr-job")
