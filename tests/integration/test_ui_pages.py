"""The web UI's pages and assets, served in-process: public shells under a strict CSP, with no inline script or style and
nothing from another host; assets by name only; `/v1/whoami` for the page's scopes. The browser tests are tests/e2e/test_ui.py."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.routers.ui import ASSETS, CSP
from tests.conftest import ROOT, admin_headers, embedded_settings, kiln_client

PAGES = ["/ui/", "/ui/jobs/00000000-0000-0000-0000-000000000000", "/ui/studies/00000000-0000-0000-0000-000000000000", "/ui/models",
         "/ui/models/a%3Cb%3E", "/ui/models/m/versions/3", "/ui/datasets", "/docs"]  # fmt: skip
KILNS_OWN = [name for name in ASSETS if name.endswith(".js") and not name.startswith(("uplot-", "swagger-ui-"))]


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside each <script> and <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._open: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._open = tag if tag in ("script", "style") else None

    def handle_data(self, data: str) -> None:
        if self._open and data.strip():
            self.inline.append(f"<{self._open}>{data.strip()[:60]}")

    def handle_endtag(self, tag: str) -> None:
        self._open = None


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    settings = embedded_settings(tmp_path_factory.mktemp("ui"), examples_dir=ROOT / "examples")
    with kiln_client(settings) as client:
        client.headers.pop("Authorization")  # the pages and assets need no key
        client.app_settings = settings  # type: ignore[attr-defined]
        yield client


def parse(html: str) -> Tags:
    tags = Tags()
    tags.feed(html)
    return tags


@pytest.mark.parametrize("page", PAGES)
def test_every_page_is_public_under_a_strict_policy_with_no_inline_code_or_other_host(client: TestClient, page: str) -> None:
    response = client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert policy.startswith(CSP) and "unsafe" not in policy and "http" not in policy
    assert response.headers["x-content-type-options"] == "nosniff" and response.headers["x-frame-options"] == "DENY"
    found = parse(response.text)
    assert found.inline == [], "inline script or style: the CSP would block it"
    for tag, attrs in found.tags:
        assert not [a for a in attrs if a.startswith("on") or a == "style"], (tag, attrs)  # no handler or style attribute
        for attr in ("src", "href"):
            link = attrs.get(attr)
            if link is not None and tag in ("script", "link", "img"):
                assert link.startswith("/") and not link.startswith("//"), link  # this origin only
                assert client.get(link).status_code == 200, link  # and it is served


def test_a_path_value_is_escaped_in_the_page(client: TestClient) -> None:
    html = client.get("/ui/models/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E").text
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_kilns_own_scripts_name_no_other_host_and_evaluate_no_strings() -> None:
    assert {"api.js", "jobs.js", "job.js", "study.js", "version.js", "playground.js", "datasets.js", "docs.js"} <= set(KILNS_OWN)
    for name in KILNS_OWN:
        text = ASSETS[name].body.decode()
        assert not re.search(r"https?://", text), name
        assert not re.search(r"\b(eval|innerHTML|outerHTML|insertAdjacentHTML|document\.write)\b|new Function", text), name


def test_the_vendored_libraries_keep_their_licences_and_pinned_versions() -> None:
    assert ASSETS["uplot-1.6.32.LICENSE.txt"].body.startswith(b"The MIT License")
    assert b"Apache License" in ASSETS["swagger-ui-5.35.0.LICENSE.txt"].body and "swagger-ui-5.35.0.NOTICE.txt" in ASSETS
    assert b"sourceMappingURL" not in ASSETS["swagger-ui-5.35.0-bundle.js"].body  # no request for a map that is not there


def test_an_asset_has_its_type_and_etag_and_answers_304_to_it(client: TestClient) -> None:
    first = client.get("/ui/static/api.js")
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/javascript")
    assert first.headers["x-content-type-options"] == "nosniff"
    again = client.get("/ui/static/api.js", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert client.get("/ui/static/kiln.css").headers["content-type"].startswith("text/css")


@pytest.mark.parametrize("name", ["nope.js", "ui.py", ".env", "API.JS"])
def test_only_a_named_asset_is_served(client: TestClient, name: str) -> None:
    response = client.get(f"/ui/static/{name}")
    assert response.status_code == 404 and response.json()["error"]["field"] == "name"


@pytest.mark.parametrize("path", ["/ui/static/..%2Frouters%2Fui.py", "/ui/static/%2Fetc%2Fpasswd", "/ui/static/..%2F..%2Fmain.py"])
def test_no_path_reaches_a_file_outside_the_assets(client: TestClient, path: str) -> None:
    admin = admin_headers(client.app_settings.database_url)  # type: ignore[attr-defined]  # past the gate: the router answers
    response = client.get(path, headers=admin)
    assert response.status_code == 404 and "import" not in response.text and "root:" not in response.text


def test_ui_without_its_slash_is_sent_to_the_jobs_page_without_a_key(client: TestClient) -> None:
    response = client.get("/ui", follow_redirects=False)
    assert response.status_code == 308 and response.headers["location"] == "/ui/"


def test_an_example_is_served_as_it_is_on_disk_and_only_an_example(client: TestClient) -> None:
    response = client.get("/ui/examples/cnn_digits")
    assert response.status_code == 200 and response.json() == json.loads((ROOT / "examples" / "cnn_digits.json").read_text())
    for name in ("nope", "pyproject", "CNN_DIGITS", "cnn_digits.json"):
        missing = client.get(f"/ui/examples/{name}")
        assert missing.status_code == 404 and missing.json()["error"]["field"] == "name"
    listed = re.findall(r'<option value="([a-z0-9_]+)">', client.get("/ui/").text)
    assert "cnn_digits" in listed and "study_digits" in listed
    assert set(listed) >= {p.stem for p in Path(ROOT / "examples").glob("*.json")}


def test_whoami_names_the_key_and_its_scopes(client: TestClient) -> None:
    database = client.app_settings.database_url  # type: ignore[attr-defined]
    assert client.get("/v1/whoami").status_code == 401
    admin = client.get("/v1/whoami", headers=admin_headers(database)).json()
    assert admin == {"name": "tests", "scopes": ["read", "predict", "train", "admin"], "auth_disabled": False}
    reader = client.get("/v1/whoami", headers=admin_headers(database, ("read", "predict"))).json()
    assert reader["scopes"] == ["read", "predict"]


def test_the_docs_are_kilns_own_copy_of_swagger_ui_and_redoc_is_gone(client: TestClient) -> None:
    html = client.get("/docs").text
    assert "/ui/static/swagger-ui-5.35.0-bundle.js" in html and "cdn" not in html.lower()
    admin = admin_headers(client.app_settings.database_url)  # type: ignore[attr-defined]
    assert client.get("/redoc", headers=admin).status_code == 404 and client.get("/docs/oauth2-redirect", headers=admin).status_code == 404
    assert client.get("/openapi.json").status_code == 200
