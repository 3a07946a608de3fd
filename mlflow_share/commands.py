"""Helpers every ``mlflow-share`` command uses to reach a server: the client and its errors."""

from __future__ import annotations

from typing import Any

import click

from mlflow_share.client import ShareAdminClient, ShareApiError, ShareClientError, ShareUnreachable


def admin_client(ctx: click.Context) -> ShareAdminClient:
    """A client for the server named by ``--tracking-uri``/``MLFLOW_TRACKING_URI``."""
    try:
        return ShareAdminClient((ctx.find_root().obj or {}).get("tracking_uri"))
    except ShareClientError as exc:
        raise click.UsageError(exc.message) from None


def click_error(exc: ShareClientError) -> click.ClickException:
    """A client error as the CLI says it: the server's answer or an unreachable server
    (exit 1), or a request the client refused to send (a usage error, exit 2)."""
    if isinstance(exc, ShareApiError):
        return click.ClickException(f"{exc.remote_error_code} ({exc.status}): {exc.message}")
    if isinstance(exc, ShareUnreachable):
        return click.ClickException(exc.message)
    return click.UsageError(exc.message)


def call_server(call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a client call, turning its errors into click errors (exit 1 or 2)."""
    try:
        return call(*args, **kwargs)
    except ShareClientError as exc:
        raise click_error(exc) from None
