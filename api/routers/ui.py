"""`/ui/`: the web UI's pages and assets, and `/docs` served from Kiln itself.

The pages are Jinja2 shells, public like their assets: what they show comes from the public API, which the
page's own scripts call with the key kept in sessionStorage. Nothing here reads the registry, so the UI can do
nothing a key could not do with curl. Every page is sent with a Content-Security-Policy of `default-src 'self'`
(no inline script or style, nothing from another host).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape

from api.deps import ContextDep
from services.errors import NotFound

UI = Path(__file__).resolve().parent.parent / "ui"
CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                "X-Frame-Options": "DENY", "Cache-Control": "no-cache"}  # fmt: skip
DOCS_HEADERS = PAGE_HEADERS | {"Content-Security-Policy": CSP + "; img-src 'self' data:"}  # Swagger UI's CSS draws its icons as data: SVGs
_EXAMPLE = re.compile(r"^[a-z0-9_]{1,64}$")
# By suffix, not by the host's mime.types (which a slim image lacks, and which says application/javascript on some).
MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
               ".txt": "text/plain; charset=utf-8", ".png": "image/png"}  # fmt: skip

router = APIRouter(include_in_schema=False)
templates = Environment(loader=FileSystemLoader(UI / "templates"), autoescape=select_autoescape(default=True), auto_reload=False)


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def _assets(folder: Path) -> dict[str, Asset]:
    """Every file of the flat static folder, read once: a request names one of these or gets a 404 (no path is joined)."""
    found = {}
    for path in sorted(folder.iterdir()):
        if path.is_file():
            body = path.read_bytes()
            media = MEDIA_TYPES.get(path.suffix, "application/octet-stream")
            found[path.name] = Asset(body, media, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return found


ASSETS = _assets(UI / "static")


def _page(template: str, headers: dict[str, str] = PAGE_HEADERS, **values: Any) -> HTMLResponse:
    return HTMLResponse(templates.get_template(template).render(**values), headers=headers)


@router.get("/ui")
def ui_root() -> RedirectResponse:
    """/ui, as typed: the jobs page (the gate would otherwise refuse an unknown path without a key)."""
    return RedirectResponse("/ui/", status_code=308)


@router.get("/ui/", response_class=HTMLResponse)
def jobs_page(ctx: ContextDep) -> HTMLResponse:
    """Jobs: the table, and a form to submit a job or a study (from examples/, pasted or uploaded JSON)."""
    return _page("jobs.html", page="jobs", examples=_example_names(ctx.settings.examples_dir))


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page(job_id: Annotated[str, PathParam(max_length=64)]) -> HTMLResponse:
    """A job: its state, live curves, epochs, warnings, GAN samples; cancel."""
    return _page("job.html", page="jobs", job_id=job_id)


@router.get("/ui/studies/{study_id}", response_class=HTMLResponse)
def study_page(study_id: Annotated[str, PathParam(max_length=64)]) -> HTMLResponse:
    """A study: its trials against the objective."""
    return _page("study.html", page="jobs", study_id=study_id)


@router.get("/ui/models", response_class=HTMLResponse)
def models_page() -> HTMLResponse:
    return _page("models.html", page="models")


@router.get("/ui/models/{name}", response_class=HTMLResponse)
def model_page(name: Annotated[str, PathParam(max_length=256)]) -> HTMLResponse:
    return _page("model.html", page="models", model=name)


@router.get("/ui/models/{name}/versions/{version}", response_class=HTMLResponse)
def version_page(name: Annotated[str, PathParam(max_length=256)], version: Annotated[int, PathParam(ge=1)]) -> HTMLResponse:
    """A version: metrics, signature, lineage, aliases, the ONNX download and a playground."""
    return _page("version.html", page="models", model=name, version=version)


@router.get("/ui/datasets", response_class=HTMLResponse)
def datasets_page() -> HTMLResponse:
    return _page("datasets.html", page="datasets")


@router.get("/ui/examples/{name}")
def read_example(name: str, ctx: ContextDep) -> Response:
    """One of examples/ as it is on disk: a job spec to start from."""
    known = _example_names(ctx.settings.examples_dir)
    if name not in known:  # names come from the folder's listing: no path is built from the request
        raise NotFound(f"no example {name!r}: the examples are {', '.join(known)}", field="name")
    body = (ctx.settings.examples_dir / f"{name}.json").read_bytes()
    return Response(body, media_type="application/json", headers={"Cache-Control": "no-cache"})


@router.get("/ui/static/{name}")
def read_asset(name: str, request: Request) -> Response:
    asset = ASSETS.get(name)
    if asset is None:
        raise NotFound(f"no UI asset {name!r}", field="name")
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/docs", response_class=HTMLResponse)
def docs_page() -> HTMLResponse:
    """Swagger UI, from Kiln's own copy of its assets."""
    return _page("docs.html", DOCS_HEADERS)


def _example_names(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if _EXAMPLE.match(p.stem))
