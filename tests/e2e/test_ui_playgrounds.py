"""The playground for each kind of model in a real browser (a row form, a text box, an autoencoder), and the issue's first
promise on make run's embedded stack: sign in with the printed key, train the digits CNN, draw a digit it reads."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Browser, expect

from services.data.builtins import load_builtin
from tests.conftest import ROOT
from tests.datasets_factory import iris_csv, sentiment_csv
from tests.e2e.browser import Watched, draw, held_out_digit, sign_in, signed_in, train, upload
from tests.e2e.helpers import start_make_run, stop
from tests.factories import job_body

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def other_kinds(ui: dict[str, Any]) -> dict[str, int]:
    """A tabular classifier (iris), a text classifier with one sigmoid (an uploaded review CSV) and a digits autoencoder."""
    http = ui["http"]
    iris = upload(http, "iris.csv", iris_csv(), target="species")
    reviews = upload(http, "reviews.csv", sentiment_csv(), format="text_csv")
    tabular = {
        "input_shape": [4],
        "layers": [{"type": "Dense", "units": 16, "activation": "relu"}, {"type": "Dense", "units": 3, "activation": "softmax"}],
    }
    text = {"input_shape": [16], "layers": [{"type": "Embedding", "input_dim": 200, "output_dim": 16}, {"type": "LSTM", "units": 16},
                                            {"type": "Dense", "units": 1, "activation": "sigmoid"}]}  # fmt: skip
    autoencoder = json.loads((ROOT / "examples" / "anomaly_autoencoder_digits.json").read_text())
    autoencoder["model_name"], autoencoder["training"]["epochs"] = "ui-ae", 4
    jobs = {
        "ui-iris": job_body(model_name="ui-iris", model=tabular, data={"dataset": iris, "validation_split": 0.2},
                            training={"epochs": 60, "optimizer": {"name": "adam", "learning_rate": 0.03}}),
        "ui-reviews": job_body(model_name="ui-reviews", model=text, data={"dataset": reviews, "validation_split": 0.1,
                               "text": {"max_tokens": 200, "sequence_length": 16}},
                               training={"optimizer": {"name": "adam", "learning_rate": 0.01}, "loss": "binary_crossentropy", "epochs": 8}),
        "ui-ae": autoencoder,
    }  # fmt: skip
    return {name: train(http, body)["version"] for name, body in jobs.items()}


def test_the_playground_fits_a_row_a_text_and_an_autoencoder(ui: dict[str, Any], other_kinds: dict[str, int], tmp_path: Path) -> None:
    tab = ui["tab"]
    signed_in(tab, ui["key"])
    page = tab.open(f"/ui/models/ui-iris/versions/{other_kinds['ui-iris']}")
    fields = page.locator("#row-form input[data-feature]")
    expect(fields).to_have_count(4)
    for i, value in enumerate([5.1, 3.5, 1.4, 0.2]):  # iris' first row: a setosa
        fields.nth(i).fill(str(value))
    page.click("#predict")
    expect(page.locator("#predicted-label")).to_have_text("setosa")
    expect(page.locator("#probabilities li")).to_have_count(3)
    tab.shot("playground-row")

    page = tab.open(f"/ui/models/ui-reviews/versions/{other_kinds['ui-reviews']}")
    page.fill("#text-input", "A wonderful film, I loved it")
    page.click("#predict")
    expect(page.locator("#predicted-label")).to_have_text("positive")
    bars = page.locator("#probabilities li")
    expect(bars).to_have_count(2)  # one sigmoid, both classes
    p = [float(bars.nth(i).get_attribute("data-p") or -1) for i in range(2)]
    assert abs(sum(p) - 1) < 1e-5 and p[1] > 0.5, p
    tab.shot("playground-text")

    digit = load_builtin("digits").x_test[0].reshape(8, 8)
    png = tmp_path / "digit.png"
    Image.fromarray((digit / 16 * 255).round().astype(np.uint8)).resize((64, 64), Image.Resampling.NEAREST).save(png)
    page = tab.open(f"/ui/models/ui-ae/versions/{other_kinds['ui-ae']}")
    before = int(page.locator("#playground").get_attribute("data-predictions") or 0)
    page.set_input_files("#image-file", str(png))
    expect(page.locator("#playground")).to_have_attribute("data-predictions", str(before + 1))
    score = float(page.locator("#anomaly").get_attribute("data-score") or -1)
    sent = np.asarray(tab.predict_bodies[-1]["inputs"][0], dtype=np.float64)
    assert sent.shape == (64,) and np.abs(sent - digit.reshape(-1)).max() < 1.5  # the PNG, read at 8 x 8 in the range 0-16
    detected = ui["http"].post(f"/v1/models/ui-ae/versions/{other_kinds['ui-ae']}/detect", json={"inputs": [sent.tolist()]}).json()
    assert score == pytest.approx(detected["scores"][0], rel=1e-6)
    assert int(page.locator("#reconstruction").get_attribute("width") or 0) > 0
    tab.shot("playground-autoencoder")
    assert tab.errors == [] and tab.dialogs == [] and [u for u in tab.requests if not u.startswith(tab.url + "/")] == []


def test_after_make_run_a_new_user_signs_in_with_the_printed_key_trains_and_draws(browser: Browser, tmp_path: Path) -> None:
    """The issue's first promise, on make run's embedded stack (SQLite registry and broker)."""
    proc, url = start_make_run(tmp_path / "var", tmp_path / "make-run.log")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        key = (tmp_path / "var" / "api-key").read_text().strip()
        deadline = time.monotonic() + 60  # the banner follows the worker's announcement
        while key not in (tmp_path / "make-run.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert key in (tmp_path / "make-run.log").read_text() and f"{url}/ui/" in (tmp_path / "make-run.log").read_text()
        tab = Watched(context.new_page(), url)
        page = sign_in(tab, key)
        page.select_option("#example", "cnn_digits")
        expect(page.locator("#spec")).to_have_value(re.compile("cnn-digits"))
        page.click("#submit-button")
        page.wait_for_url(re.compile(r"/ui/jobs/[0-9a-f-]{36}$"))
        expect(page.locator("#job")).to_have_attribute("data-state", "succeeded", timeout=180_000)
        expect(page.locator('figure.chart[data-title="accuracy"]')).to_have_attribute("data-points", "20")
        page.click("[data-fact=version] a")
        expect(page.locator("#draw")).to_be_visible()
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        strokes, label = held_out_digit(http, "cnn-digits", int(page.locator("#version").get_attribute("data-version") or 0))
        drawn = draw(page, strokes)
        page.click("#predict")
        expect(page.locator("#playground")).to_have_attribute("data-predictions", str(drawn + 1))
        expect(page.locator("#predicted-label")).to_have_text(str(label))
        assert tab.errors == [] and [u for u in tab.requests if not u.startswith(url + "/")] == []
    finally:
        context.close()
        stop(proc, sig=signal.SIGINT, timeout=60)
    logged = (tmp_path / "make-run.log").read_text(errors="replace").splitlines()  # the API's and worker's logs too
    assert [line for line in logged if key in line and line.strip() != key and not line.startswith("Send it as:")] == []
