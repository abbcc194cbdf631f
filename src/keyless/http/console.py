"""The web console: static pages served at ``/console/`` on the API port.

The console is a client like any other: its pages sign the user in with the sign-in page of ``gcloud auth login``
(the authorization-code flow with PKCE, as the ``keyless-console`` public client) and then call the public API
with the bearer token they got, which they keep in ``sessionStorage`` (no cookie: no request is authorized by
the browser on its own, so there is nothing to forge across sites). This module only serves the files of
``keyless/console/static/``, which ship inside the package: no route here reads or changes anything.

Every answer carries a strict Content-Security-Policy (scripts, styles and connections to this origin only; no
inline script or style; never framed), ``nosniff`` and ``no-referrer`` (the page's URL holds the authorization
code for a moment after sign-in).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from keyless.errors import NotFound
from keyless.http.routing import Route

PREFIX = "/console/"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
HEADERS = {
    # 'self' only: the pages' own modules, the pinned graph library, and the API of this same origin.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Revalidated on every load (an ETag answer is a 304): an upgraded server's pages are never mixed with old ones.
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


_assets: dict[str, Asset] | None = None


def assets() -> dict[str, Asset]:
    """The files of ``static/`` by name (read once): only these names are ever served, so no path a request
    writes reaches the file system."""
    global _assets
    if _assets is None:
        found: dict[str, Asset] = {}
        for item in resources.files("keyless.console").joinpath("static").iterdir():
            suffix = item.name[item.name.rfind("."):]
            if item.is_file() and suffix in CONTENT_TYPES:
                body = item.read_bytes()
                found[item.name] = Asset(body, CONTENT_TYPES[suffix], f'"{hashlib.sha256(body).hexdigest()[:32]}"')
        _assets = found
    return _assets


def _serve(request: Request, name: str) -> Response:
    asset = assets().get(name)
    if asset is None:
        raise NotFound(f"The requested URL {request.url.path} was not found on this server.")
    headers = {**HEADERS, "ETag": asset.etag}
    if asset.etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


async def index(request: Request) -> Response:
    """``GET /console/``: the console's one page."""
    return _serve(request, "index.html")


async def asset(request: Request) -> Response:
    """``GET /console/{asset}``: a module, a style sheet or the graph library."""
    return _serve(request, request.path_params["asset"])


async def redirect(request: Request) -> Response:
    """``GET /console``: to ``/console/``, where the pages' relative URLs resolve."""
    return Response(status_code=308, headers={**HEADERS, "Location": PREFIX})


def routes() -> list[Route]:
    """The console's entries in the API port's route table (GET only: a page is never changed through them)."""
    return [Route("GET", "/console", redirect), Route("GET", PREFIX, index), Route("GET", PREFIX + "{asset}", asset)]
