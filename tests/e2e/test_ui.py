"""The web UI in a real browser: Debian's headless Chromium driven by Playwright (never `playwright install`), against a
real API and worker on PostgreSQL and Redis. Sign in, submit the digits CNN from examples/, watch its curves grow, open the
version and draw a held-out digit, generate a GAN grid, follow a study, upload hostile names and labels, and check that no
page asked another host and the key stayed out of URLs and logs. A screenshot of each page is left in build/screenshots/."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.browser import EXAMPLE, Watched, chart_points, draw, held_out_digit, sign_in, signed_in
from tests.e2e.helpers import mint_key, wait_for_job
from tests.factories import gan_body, job_body
from tests.integration.test_studies import study_body

pytestmark = pytest.mark.timeout(900)


def test_sign_in_and_submit_the_digits_cnn_from_examples(ui: dict[str, Any]) -> None:
    tab = ui["tab"]
    page = sign_in(tab, ui["key"])
    expect(page.locator("#key-scopes")).to_contain_text("admin")
    expect(page.locator("#submit")).to_be_visible()
    page.select_option("#example", "cnn_digits")
    expect(page.locator("#spec")).to_have_value(re.compile('"model_name": "cnn-digits"'))
    tab.shot("jobs")
    page.click("#submit-button")
    page.wait_for_url(re.compile(r"/ui/jobs/[0-9a-f-]{36}$"))
    expect(page.locator("#job")).to_have_attribute("data-state", "succeeded", timeout=180_000)
    expect(page.locator('figure.chart[data-title="loss"]')).to_have_attribute("data-points", "20")
    expect(page.locator("#epochs tbody tr")).to_have_count(20)
    expect(page.locator("#states li")).to_have_count(3)  # queued, running, succeeded
    expect(page.locator("[data-fact=epoch]")).to_have_text("20/20")
    tab.shot("job")
    ui["job_page"] = page.url
    ui["version_page"] = page.locator("[data-fact=version] a").get_attribute("href")
    job = ui["http"].get(f"/v1/jobs/{page.url.rsplit('/', 1)[1]}").json()
    assert job["state"] == "succeeded" and job["epoch"] == job["epochs"] == 20
    page = tab.open("/ui/")
    row = page.locator(f'#jobs-table tr[data-job="{job["id"]}"]')
    expect(row).to_contain_text("20/20")
    expect(row).to_contain_text("supervised")
    page.select_option("#state-filter", "failed")
    expect(row).to_have_count(0)
    page.select_option("#state-filter", "succeeded")
    expect(row).to_have_count(1)
    version = ui["http"].get(ui["version_page"].replace("/ui/", "/v1/")).json()  # what the page submitted is the example itself
    assert version["job_id"] == job["id"] and [layer["type"] for layer in version["spec"]["layers"]] == [
        layer["type"] for layer in EXAMPLE["model"]["layers"]
    ]


def test_the_curves_gain_points_while_the_job_trains(ui: dict[str, Any]) -> None:
    """Pasted JSON this time: the example with small batches, so its 6 epochs last long enough to be watched."""
    tab = ui["tab"]
    page = tab.open("/ui/")
    slow = json.loads(json.dumps(EXAMPLE)) | {"model_name": "cnn-digits-live"}
    slow["training"] |= {"epochs": 6, "batch_size": 2}
    page.fill("#spec", json.dumps(slow, indent=2))
    page.click("#submit-button")
    page.wait_for_url(re.compile(r"/ui/jobs/[0-9a-f-]{36}$"))
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        state = page.locator("#job").get_attribute("data-state") or ""
        points = chart_points(page, "loss") if page.locator('figure.chart[data-title="loss"]').count() else 0
        seen.append((state, points))
        if state == "succeeded" and points == 6:
            break
        time.sleep(0.05)
    growing = [points for state, points in seen if state == "running"]
    assert seen[-1] == ("succeeded", 6), seen[-10:]
    assert any(0 < p < 6 for p in growing), f"no partial curve was seen while the job ran: {sorted(set(seen))}"
    assert [p for _, p in seen] == sorted(p for _, p in seen)  # points are only ever added
    assert len({p for p in growing if p > 0}) >= 2, sorted(set(seen))  # it grew in front of us, not once at the end


def test_a_spec_error_is_shown_beside_the_field_it_names_as_text(ui: dict[str, Any]) -> None:
    tab = ui["tab"]
    page = tab.open("/ui/")
    bad = json.loads(json.dumps(EXAMPLE))
    bad["training"]["epochs"] = 0
    bad["model"]["layers"][0]["type"] = "<img src=x onerror=alert('spec')>"
    page.fill("#spec", json.dumps(bad, indent=2))
    page.click("#submit-button")
    errors = page.locator("#spec-errors .field-error")
    expect(errors.first).to_be_visible()
    fields = [errors.nth(i).get_attribute("data-field") for i in range(errors.count())]
    assert any(f and f.startswith("model.layers") for f in fields), fields
    assert page.url.endswith("/ui/")  # nothing was submitted
    expect(page.locator("#spec-errors")).to_contain_text("line")  # where in the pasted JSON
    page.fill("#spec", "{not json")
    page.click("#submit-button")
    expect(page.locator('#spec-errors .field-error[data-field="body"]')).to_contain_text("not valid JSON")
    tab.shot("jobs-spec-errors")


def test_the_version_page_shows_its_record_and_reads_a_drawn_digit(ui: dict[str, Any]) -> None:
    tab = ui["tab"]
    page = tab.open(ui["version_page"])
    model, version = page.locator("#version").get_attribute("data-model"), int(page.locator("#version").get_attribute("data-version") or 0)
    expect(page.locator('#metrics tr[data-metric="test_accuracy"]')).to_be_visible()
    expect(page.locator("#labels .label-name")).to_have_count(10)
    expect(page.locator("#signature tbody tr")).to_have_count(2)
    expect(page.locator("#lineage tbody tr")).to_have_count(1)
    expect(page.locator("#version-facts")).to_contain_text("digits")
    strokes, label = held_out_digit(ui["http"], str(model), version)
    expect(page.locator("#draw")).to_be_visible()
    drawn = draw(page, strokes)
    page.click("#predict")
    expect(page.locator("#playground")).to_have_attribute("data-predictions", str(drawn + 1))
    expect(page.locator("#predicted-label")).to_have_text(str(label))
    expect(page.locator("#probabilities li")).to_have_count(10)
    top = page.locator("#probabilities li.top")
    assert top.get_attribute("data-label") == str(label) and float(top.get_attribute("data-p") or 0) > 0.5
    sent = np.asarray(tab.predict_bodies[-1]["inputs"][0], dtype=np.float64)[..., 0]  # what the page made of the strokes
    assert sent.shape == (8, 8) and np.abs(sent - strokes).mean() < 2.5 and sent.max() <= 16.0, np.round(sent).astype(int)
    tab.shot("playground")
    page.click("#clear")
    expect(page.locator("#predicted-label")).to_have_count(0)


def test_aliases_move_from_the_version_page_and_the_models_pages_show_them(ui: dict[str, Any]) -> None:
    tab = ui["tab"]
    page = tab.open(ui["version_page"])
    expect(page.locator("#alias-form")).to_be_visible()
    page.fill("#alias-name", "production")
    page.click("#alias-set")
    expect(page.locator('#version-aliases li[data-alias="production"]')).to_be_visible()
    page = tab.open("/ui/models")
    expect(page.locator('#models-table tr[data-model="cnn-digits"]')).to_contain_text("production")
    tab.shot("models")
    page.click('#models-table tr[data-model="cnn-digits"] a')
    expect(page.locator('#aliases li[data-alias="production"]')).to_be_visible()
    expect(page.locator("#versions-table tbody tr").first).to_contain_text("test_accuracy")
    tab.shot("model")
    with page.expect_download() as download:
        tab.open(ui["version_page"]).click("#download-button")
    onnx = Path(download.value.path()).read_bytes()
    assert (
        download.value.suggested_filename.endswith(".onnx")
        and onnx == ui["http"].get(f"{ui['version_page'].replace('/ui', '/v1')}/artifact").content
    )


@pytest.fixture(scope="module")
def gan(ui: dict[str, Any]) -> dict[str, Any]:
    http = ui["http"]
    created = http.post("/v1/jobs", json=gan_body(model_name="ui-gan", epochs=3))
    assert created.status_code == 202, created.text
    job = wait_for_job(http, created.headers["location"], timeout=300)
    assert job["state"] == "succeeded", job
    return job


def test_a_gan_job_shows_its_sample_grids_and_its_version_generates_by_seed(ui: dict[str, Any], gan: dict[str, Any]) -> None:
    tab = ui["tab"]
    page = tab.open(f"/ui/jobs/{gan['id']}")
    expect(page.locator("#samples")).to_be_visible()
    expect(page.locator("#sample-grid")).to_have_attribute("data-epoch", "3")
    page.locator("#sample-epoch").fill("1")
    expect(page.locator("#sample-grid")).to_have_attribute("data-epoch", "1")
    tab.shot("gan-job")
    page = tab.open(f"/ui/models/ui-gan/versions/{gan['version']}")
    page.fill("#seed", "7")
    page.fill("#n", "16")
    page.click("#generate")
    expect(page.locator("#generated")).to_have_attribute("data-seed", "7")
    assert int(page.locator("#generated").get_attribute("width") or 0) > 0
    tab.shot("gan-playground")


def test_a_study_submitted_from_the_page_shows_its_trials_against_the_objective(ui: dict[str, Any]) -> None:
    tab = ui["tab"]
    page = tab.open("/ui/")
    page.fill("#spec", json.dumps(study_body(job=job_body(model_name="ui-study", training={"epochs": 2}))))
    page.click("#submit-button")
    page.wait_for_url(re.compile(r"/ui/studies/[0-9a-f-]{36}$"))
    expect(page.locator("#study")).to_have_attribute("data-state", "succeeded", timeout=300_000)
    expect(page.locator("#trials tbody tr")).to_have_count(2)
    expect(page.locator('#trial-chart figure.chart[data-title="val_accuracy"]')).to_have_attribute("data-points", "2")
    expect(page.locator("[data-fact='best version'] a")).to_be_visible()
    tab.shot("study")


def test_hostile_dataset_names_and_labels_are_shown_as_text_and_nothing_runs(ui: dict[str, Any], tmp_path: Path) -> None:
    tab = ui["tab"]
    labels = ["<img src=x onerror=alert('label')>", "<script>alert('label2')</script>"]
    path = tmp_path / "hostile.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["a", "b", "label"])
        for i in range(40):
            writer.writerow([i % 7, i % 3, labels[i % 2]])
    name = "<script>alert('name')</script><b onmouseover=alert(1)>bold</b>"
    page = tab.open("/ui/datasets")
    expect(page.locator("#upload")).to_be_visible()
    page.set_input_files("#upload-file", str(path))
    page.fill("#upload-name", name)
    page.fill("#upload-target", "label")
    page.click("#upload-button")
    expect(page.locator("#upload-status")).to_contain_text("uploaded")
    assert float(page.locator("#upload-progress").get_attribute("value") or 0) == 1.0
    row = page.locator("#datasets-table tbody tr", has=page.locator("td.dataset-name", has_text=name))
    expect(row).to_have_count(1)
    expect(row.locator("td.dataset-name")).to_have_text(name)
    for label in labels:
        expect(row.locator("td.classes")).to_contain_text(label)
    assert page.locator("#datasets-table img, #datasets-table script, #datasets-table b").count() == 0
    page.hover("#datasets-table td.dataset-name >> nth=-1")
    tab.shot("datasets")
    page.set_input_files("#upload-file", [])
    page.click("#upload-button")
    expect(page.locator('#upload-errors [data-field="file"]')).to_be_visible()
    assert tab.dialogs == []


def test_a_read_only_key_is_offered_nothing_it_may_not_do(ui: dict[str, Any], browser: Browser) -> None:
    reader = mint_key(ui["kiln"]["env"], "read")["Authorization"].removeprefix("Bearer ")
    context = browser.new_context()
    tab = Watched(context.new_page(), ui["kiln"]["url"])
    try:
        page = sign_in(tab, reader)
        expect(page.locator("#key-scopes")).to_have_text("read")
        expect(page.locator("#jobs-table tbody tr").first).to_be_visible()
        expect(page.locator("#submit")).to_be_hidden()
        page = tab.open(ui["job_page"].removeprefix(ui["kiln"]["url"]))
        expect(page.locator("#job")).to_have_attribute("data-state", "succeeded")
        expect(page.locator("#cancel-button")).to_be_hidden()
        page = tab.open(ui["version_page"])
        expect(page.locator("#metrics tbody tr").first).to_be_visible()
        expect(page.locator("#alias-form")).to_be_hidden()
        expect(page.locator("#version-aliases button[data-remove]")).to_have_count(0)
        expect(page.locator("#playground")).to_contain_text("lacks the predict scope")
        page = tab.open("/ui/datasets")
        expect(page.locator("#datasets-table tbody tr").first).to_be_visible()
        expect(page.locator("#upload")).to_be_hidden()
        page.click("#signout-button")
        expect(page.locator("#signin-form")).to_be_visible()
        expect(page.locator("#datasets")).to_be_hidden()
    finally:
        context.close()
    assert tab.errors == [] and tab.dialogs == []


def test_an_error_a_page_meets_is_shown_on_it_and_keeps_the_user_signed_in(ui: dict[str, Any], browser: Browser) -> None:
    tab = ui["tab"]
    signed_in(tab, ui["key"])
    page = tab.open("/ui/jobs/00000000-0000-0000-0000-000000000000")
    expect(page.locator("#page-error")).to_contain_text("00000000-0000-0000-0000-000000000000")  # the API's 404, as text
    expect(page.locator("#signed-in")).to_be_visible()
    trainer = mint_key(ui["kiln"]["env"], "train")["Authorization"].removeprefix("Bearer ")
    context = browser.new_context()
    other = Watched(context.new_page(), ui["kiln"]["url"])
    try:
        page = sign_in(other, trainer)  # a key that may train but not read: the list is refused, the form is offered
        expect(page.locator("#jobs-error")).to_contain_text("read")
        expect(page.locator("#submit")).to_be_visible()
        expect(page.locator("#signed-in")).to_be_visible()
        page.reload()
        expect(page.locator("#signed-in")).to_be_visible()  # the key was kept
    finally:
        context.close()


def test_the_docs_render_from_kilns_own_assets(ui: dict[str, Any]) -> None:
    tab = ui["tab"]
    page = tab.open("/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Kiln")
    expect(page.locator(".opblock-tag-section").first).to_be_visible()
    tab.shot("docs")


def test_no_page_asked_another_host_and_the_key_stayed_out_of_urls_and_logs(ui: dict[str, Any]) -> None:
    tab, key = ui["tab"], ui["key"]
    assert len(tab.requests) > 50  # the tests above ran in this tab
    elsewhere = [u for u in tab.requests if not u.startswith(tab.url + "/") and not u.startswith(("data:", "blob:"))]
    assert elsewhere == []
    assert not [u for u in tab.requests if key in u or key[:16] in u]
    for log in ui["kiln"]["logs"]:
        assert key not in log.read_text(errors="replace")
    assert [m for m in tab.console if "Content Security Policy" in m] == []  # nothing the page does is blocked
    assert tab.errors == [] and tab.dialogs == []
    stored = tab.page.evaluate("() => [sessionStorage.getItem('kiln.apiKey'), localStorage.length, document.cookie]")
    assert stored == [key, 0, ""]
