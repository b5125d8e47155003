"""The one route table: each route's method, path template, scopes, hot path and body cap.

The auth policy (api.auth), the routes served ahead of FastAPI (api.hotpath, built in api.main),
the body-size cap (api.middleware) and the OpenAPI security (api.main) are all read from here, so a
route is declared once and a test checks the table against the app's routes both ways.
- `scopes`: None for a public route, else the scopes any one of which is enough (admin keys may do anything);
- `hot`: served by api.hotpath ahead of FastAPI, from the routers' FAST_ROUTES;
- `capped`: the body is refused past KILN_MAX_BODY_MB; uploads stream to disk and keep limits of their own.
A GET route also answers HEAD.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from starlette.routing import Route

PUBLIC = None
READ, PREDICT, TRAIN, ADMIN = frozenset({"read"}), frozenset({"predict"}), frozenset({"train"}), frozenset({"admin"})
METADATA = PREDICT | READ  # the v2 metadata a Triton client reads before it infers
ANY_KEY = READ | PREDICT | TRAIN | ADMIN
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class RouteSpec:
    method: str
    path: str  # the template, as the router declares it: /v1/jobs/{job_id}
    scopes: frozenset[str] | None
    hot: bool = False
    capped: bool = True
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # A parameter is one path segment; a trailing slash is allowed (FastAPI redirects it to the route).
        regex = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(self.path.rstrip("/"))) + "/?$"
        object.__setattr__(self, "pattern", re.compile(regex))


_M, _V = "/v1/models/{name}", "/v2/models/{name}"
ROUTES: tuple[RouteSpec, ...] = (
    # The documentation and probes.
    RouteSpec("GET", "/openapi.json", PUBLIC),
    RouteSpec("GET", "/docs", PUBLIC),  # Swagger UI from Kiln's own copy of its assets (api.routers.ui)
    RouteSpec("GET", "/healthz", PUBLIC),
    RouteSpec("GET", "/readyz", PUBLIC),
    RouteSpec("GET", "/metrics", PUBLIC),
    # Kiln's JSON predict.
    RouteSpec("POST", f"{_M}/versions/{{version}}/predict", PREDICT, hot=True),
    RouteSpec("POST", f"{_M}/aliases/{{alias}}/predict", PREDICT, hot=True),
    RouteSpec("POST", f"{_M}/predict", PREDICT, hot=True),
    # An autoencoder's anomaly detection.
    RouteSpec("POST", f"{_M}/versions/{{version}}/detect", PREDICT),
    RouteSpec("POST", f"{_M}/aliases/{{alias}}/detect", PREDICT),
    RouteSpec("POST", f"{_M}/detect", PREDICT),
    # A GAN generator's samples.
    RouteSpec("POST", f"{_M}/versions/{{version}}/generate", PREDICT),
    RouteSpec("POST", f"{_M}/aliases/{{alias}}/generate", PREDICT),
    RouteSpec("POST", f"{_M}/generate", PREDICT),
    # The Open Inference Protocol v2.
    RouteSpec("GET", "/v2", METADATA),
    RouteSpec("GET", "/v2/health/live", PUBLIC),
    RouteSpec("GET", "/v2/health/ready", PUBLIC),
    RouteSpec("GET", _V, METADATA),
    RouteSpec("GET", f"{_V}/versions/{{version}}", METADATA),
    RouteSpec("GET", f"{_V}/ready", METADATA),
    RouteSpec("GET", f"{_V}/versions/{{version}}/ready", METADATA),
    RouteSpec("POST", f"{_V}/versions/{{version}}/infer", PREDICT, hot=True),
    RouteSpec("POST", f"{_V}/infer", PREDICT, hot=True),
    # The web UI: pages and assets are public; the API calls they make carry the user's key.
    RouteSpec("GET", "/ui", PUBLIC),  # a redirect to /ui/
    RouteSpec("GET", "/ui/", PUBLIC),
    RouteSpec("GET", "/ui/jobs/{job_id}", PUBLIC),
    RouteSpec("GET", "/ui/studies/{study_id}", PUBLIC),
    RouteSpec("GET", "/ui/models", PUBLIC),
    RouteSpec("GET", "/ui/models/{name}", PUBLIC),
    RouteSpec("GET", "/ui/models/{name}/versions/{version}", PUBLIC),
    RouteSpec("GET", "/ui/datasets", PUBLIC),
    RouteSpec("GET", "/ui/examples/{name}", PUBLIC),
    RouteSpec("GET", "/ui/static/{name}", PUBLIC),
    RouteSpec("GET", "/v1/whoami", ANY_KEY),
    # Jobs.
    RouteSpec("POST", "/v1/jobs", TRAIN),
    RouteSpec("GET", "/v1/jobs", READ),
    RouteSpec("GET", "/v1/jobs/{job_id}", READ),
    RouteSpec("GET", "/v1/jobs/{job_id}/events", READ),
    RouteSpec("GET", "/v1/jobs/{job_id}/epochs/{epoch}/image", READ),
    RouteSpec("POST", "/v1/jobs/{job_id}/cancel", TRAIN),
    # Studies: hyperparameter searches whose trials are jobs.
    RouteSpec("POST", "/v1/studies", TRAIN),
    RouteSpec("GET", "/v1/studies", READ),
    RouteSpec("GET", "/v1/studies/{study_id}", READ),
    RouteSpec("GET", "/v1/studies/{study_id}/events", READ),
    RouteSpec("POST", "/v1/studies/{study_id}/cancel", TRAIN),
    # Datasets.
    RouteSpec("POST", "/v1/datasets", TRAIN, capped=False),
    RouteSpec("GET", "/v1/datasets", READ),
    RouteSpec("GET", "/v1/datasets/{dataset_id}", READ),
    RouteSpec("DELETE", "/v1/datasets/{dataset_id}", TRAIN),
    # Models, versions and aliases.
    RouteSpec("GET", "/v1/models", READ),
    RouteSpec("GET", _M, READ),
    RouteSpec("GET", f"{_M}/versions", READ),
    RouteSpec("POST", f"{_M}/versions", TRAIN, capped=False),
    RouteSpec("GET", f"{_M}/versions/{{version}}", READ),
    RouteSpec("PATCH", f"{_M}/versions/{{version}}", ADMIN),
    RouteSpec("GET", f"{_M}/versions/{{version}}/artifact", READ),
    RouteSpec("GET", f"{_M}/versions/{{version}}/weights", READ),
    RouteSpec("GET", f"{_M}/versions/{{version}}/lineage", READ),
    RouteSpec("GET", f"{_M}/versions/{{version}}/keras", READ),
    RouteSpec("GET", f"{_M}/aliases/{{alias}}", READ),
    RouteSpec("PUT", f"{_M}/aliases/{{alias}}", ADMIN),
    RouteSpec("DELETE", f"{_M}/aliases/{{alias}}", ADMIN),
)
_BY_TEMPLATE = {(spec.method, spec.path): spec for spec in ROUTES}


def _segments(path: str) -> int:
    return path.rstrip("/").count("/")


def _by_depth() -> dict[int, tuple[RouteSpec, ...]]:
    """The entries by their number of segments: a request path is tried against those of its own depth only."""
    depths: dict[int, list[RouteSpec]] = {}
    for spec in ROUTES:
        depths.setdefault(_segments(spec.path), []).append(spec)
    return {depth: tuple(specs) for depth, specs in depths.items()}


_BY_DEPTH = _by_depth()


def declared(method: str, template: str) -> RouteSpec | None:
    """The entry for a route template, as the OpenAPI document names it (GET for HEAD)."""
    return _BY_TEMPLATE.get(("GET" if method == "HEAD" else method, template))


@functools.lru_cache(maxsize=8192)
def on_path(path: str) -> tuple[RouteSpec, ...]:
    """The entries whose template a concrete request path matches, whatever their method."""
    return tuple(spec for spec in _BY_DEPTH.get(_segments(path), ()) if spec.pattern.match(path))


@functools.lru_cache(maxsize=8192)
def matching(method: str, path: str) -> RouteSpec | None:
    """The entry a concrete request falls under (GET for HEAD); None when no route serves it."""
    method = "GET" if method == "HEAD" else method
    return next((spec for spec in on_path(path) if spec.method == method), None)


def hot_routes(candidates: Sequence[Route]) -> list[Route]:
    """The routers' fast routes that the table marks hot, in the table's order; a mismatch either way is a startup error."""
    by_key = {(method, route.path_format): route for route in candidates for method in route.methods or ()}
    hot = [spec for spec in ROUTES if spec.hot]
    missing = [f"{spec.method} {spec.path}" for spec in hot if (spec.method, spec.path) not in by_key]
    extra = [f"{m} {p}" for m, p in by_key if m != "HEAD" and not getattr(declared(m, p), "hot", False)]
    if missing or extra:
        raise RuntimeError(f"api.routes and the routers' FAST_ROUTES disagree: no fast route for {missing}, not hot in the table: {extra}")
    return [by_key[(spec.method, spec.path)] for spec in hot]
