"""Errors of the ``/share/`` pages as pages: a browser that navigates to a page that does not
exist, that it may not see, or that fails (an SSO login the provider refused) gets a page in the
portal's look with the message and the way back, not MLflow's JSON envelope. Scripts and API
clients keep the envelope: only a navigation that accepts HTML gets a page."""

from __future__ import annotations

import json
from collections.abc import Mapping
from html import escape

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")  # every /share/ response's
PAGE_PREFIX = "/share/"
NOT_PAGES = ("/share/static/", "/share/session")  # assets and the scripts' JSON
_TITLES = {400: "Bad request", 401: "Log in needed", 403: "Not allowed", 404: "Page not found",
           405: "Not allowed", 409: "Conflict", 429: "Too many requests",
           503: "Try again shortly"}


def wants_page(method: str, path: str, headers: Mapping[str, str]) -> bool:
    """Whether an error of this request is best shown as a page (``headers``: lower-case keys):
    a browser navigating (or asking for HTML) to a ``/share/`` path that is not an asset."""
    if method not in ("GET", "HEAD") or not (path.startswith(PAGE_PREFIX) or path == "/share"):
        return False
    if path.startswith(NOT_PAGES):
        return False
    if headers.get("sec-fetch-mode") == "navigate":
        return True
    return "text/html" in headers.get("accept", "")


def message_of(body: bytes) -> str:
    """The message of an error in MLflow's envelope (the body itself when it is not one)."""
    try:
        found = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return body.decode("utf-8", "replace")[:500]
    if isinstance(found, dict) and isinstance(found.get("message"), str):
        return found["message"]
    return ""


def render(status: int, message: str) -> bytes:
    """The error page: status, a title, the message (escaped) and links back."""
    title = _TITLES.get(status, "Something went wrong" if status >= 500 else "Request refused")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · mlflow-share</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="/static-files/favicon.ico">
<link rel="stylesheet" href="/share/static/share.css"></head>
<body class="login"><main class="card error-page" data-status="{status}">
<p class="muted">Error {status}</p>
<h1>{escape(title)}</h1>
<p id="error-message" role="alert">{escape(message) or escape(title) + "."}</p>
<p><a class="button primary" href="/share/">Model registry</a>
<a class="button" href="/">MLflow</a></p>
</main></body></html>
""".encode()
