"""The web UI's browser tests' shared parts: Debian's headless Chromium driven by Playwright (never `playwright install`,
which downloads a browser), a tab that records what it asks for, signing in, and drawing a digit as strokes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from services.data.builtins import load_builtin
from tests.conftest import ROOT
from tests.e2e.helpers import wait_for_job

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "build" / "screenshots"
EXAMPLE = json.loads((ROOT / "examples" / "cnn_digits.json").read_text())


class Watched:
    """A browser page that records every request it makes, its console errors, uncaught errors and dialogs."""

    def __init__(self, page: Page, url: str) -> None:
        self.page, self.url = page, url
        self.requests: list[str] = []
        self.console: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.predict_bodies: list[Any] = []
        page.on("request", self._request)
        page.on("console", lambda m: self.console.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))

    def _request(self, request: Any) -> None:
        self.requests.append(request.url)
        if request.method == "POST" and request.url.endswith("/predict"):
            self.predict_bodies.append(request.post_data_json)

    def open(self, path: str) -> Page:
        self.page.goto(self.url + path)
        return self.page

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def ui(kiln: dict, browser: Browser) -> Iterator[dict[str, Any]]:
    """One signed-in tab shared by the module's tests (as one user clicking through), and what they leave for the next."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watched = Watched(context.new_page(), kiln["url"])
    key = kiln["headers"]["Authorization"].removeprefix("Bearer ")
    yield {"tab": watched, "key": key, "kiln": kiln, "http": httpx.Client(base_url=kiln["url"], headers=kiln["headers"], timeout=60)}
    context.close()


def sign_in(tab: Watched, key: str, path: str = "/ui/") -> Page:
    page = tab.open(path)
    expect(page.locator("#signin-form")).to_be_visible()
    expect(page.locator("#jobs")).to_be_hidden()  # nothing but the sign-in without a key
    page.fill("#signin-key", key)
    page.click("#signin-button")
    expect(page.locator("#signed-in")).to_be_visible()
    return page


def signed_in(tab: Watched, key: str) -> None:
    """The tab signed in, whether or not an earlier test did it (so each test can also run alone)."""
    page = tab.open("/ui/")
    page.locator("#signin-form:visible, #signed-in:visible").wait_for()
    if page.locator("#signin-form").is_visible():
        sign_in(tab, key)


def chart_points(page: Page, title: str) -> int:
    return int(page.locator(f'figure.chart[data-title="{title}"]').get_attribute("data-points") or 0)


def held_out_digit(http: httpx.Client, model: str, version: int) -> tuple[np.ndarray, int]:
    """A test-split digit drawn as the page will (runs of bright cells become strokes, at full brightness), that the model
    reads confidently: the held-out rows the job never trained on."""
    data = load_builtin("digits")
    for image, label in zip(data.x_test, data.y_test, strict=True):
        strokes = np.where(image.reshape(8, 8) >= 7, 16.0, 0.0)
        answer = http.post(f"/v1/models/{model}/versions/{version}/predict", json={"inputs": [strokes[..., None].tolist()]}).json()
        if answer["labels"][0] == str(int(label)) and max(answer["outputs"][0]) > 0.9:
            return strokes, int(label)
    raise AssertionError("no held-out digit survives being drawn as strokes")


def draw(page: Page, strokes: np.ndarray) -> int:
    """Each row's runs of bright cells as mouse strokes on the canvas; the number of strokes."""
    box = page.locator("#draw").bounding_box()
    assert box is not None
    cell_h, cell_w = box["height"] / strokes.shape[0], box["width"] / strokes.shape[1]
    count = 0
    for row, line in enumerate(strokes):
        col = 0
        while col < len(line):
            if line[col] == 0:
                col += 1
                continue
            end = col
            while end + 1 < len(line) and line[end + 1] > 0:
                end += 1
            y = box["y"] + (row + 0.5) * cell_h
            page.mouse.move(box["x"] + (col + 0.5) * cell_w, y)
            page.mouse.down()
            page.mouse.move(box["x"] + (end + 0.5) * cell_w, y, steps=4)
            page.mouse.up()
            count += 1
            col = end + 1
    return count


def train(http: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    created = http.post("/v1/jobs", json=body)
    assert created.status_code == 202, created.text
    job = wait_for_job(http, created.headers["location"], timeout=300)
    assert job["state"] == "succeeded", job
    return job


def upload(http: httpx.Client, name: str, text: str, **fields: str) -> str:
    uploaded = http.post("/v1/datasets", data=fields, files={"file": (name, text.encode())})
    assert uploaded.status_code in (200, 201), uploaded.text
    return str(uploaded.json()["id"])
