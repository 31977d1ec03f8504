"""GET /playground: a chat page served by Portico itself, with its script and stylesheet.

The page is plain HTML, CSS and JavaScript committed under ``portico/static``: no build step at install and
nothing fetched from another origin (the Content-Security-Policy below holds the page to that). Loading it needs
no API key, since it is the same for everyone and holds no data; the API calls it makes carry the key the user
pastes, like any other client's.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.responses import Response

router = APIRouter(tags=["playground"])

# Same-origin only: a page that could load a script from elsewhere could also send the pasted key elsewhere.
_HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "cache-control": "no-cache",
}


@cache
def _static(name: str) -> bytes:
    """The file's bytes, read once: the files ship in the package and do not change while the server runs."""
    return (files("portico") / "static" / name).read_bytes()


def _asset(name: str, media_type: str) -> Response:
    return Response(_static(name), media_type=media_type, headers=_HEADERS)


@router.get("/playground", response_class=HTMLResponse)
async def playground() -> Response:
    """A chat page for trying the served models: streaming answers with usage, cost, request id and time to
    first token. Open it in a browser; paste an API key when the server requires one."""
    return _asset("playground.html", "text/html")


@router.get("/playground/playground.js", include_in_schema=False)
async def playground_script() -> Response:
    return _asset("playground.js", "text/javascript")


@router.get("/playground/playground.css", include_in_schema=False)
async def playground_stylesheet() -> Response:
    return _asset("playground.css", "text/css")
