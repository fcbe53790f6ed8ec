"""The node's web page: ``/`` and its files under ``/static/``, shipped inside the package.

The page is plain HTML, CSS and JavaScript (``static/``): it reads the same
REST API as any client and follows ``GET /events``; nothing is loaded from
anywhere but this node, which the Content-Security-Policy sent with every
file enforces in the browser (no other origin, no inline script), so the page
works on a machine with no internet and cannot be made to fetch from one.
It is not part of the API, so it is not in the OpenAPI document.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

STATIC = Path(__file__).with_name("static")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)

page = Blueprint("page", __name__)


@page.get("/")
def index() -> Response:
    return _file("index.html")


@page.get("/static/<path:name>")
def static_file(name: str) -> Response:
    return _file(name)  # send_from_directory refuses any name outside STATIC (404)


def _file(name: str) -> Response:
    resp = send_from_directory(STATIC, name, max_age=0)
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp
