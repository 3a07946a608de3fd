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


# -- output for people, and for scripts --------------------------------------------------------
def iso_time(ms: Any) -> str:
    """Epoch milliseconds as ISO 8601 UTC (``-`` when there is none)."""
    from datetime import datetime, timezone

    if ms in (None, ""):
        return "-"
    return datetime.fromtimestamp(int(ms) / 1000, timezone.utc).isoformat(timespec="seconds")


def token_state(entry: dict[str, Any]) -> str:
    """A listed token's state: revoked, expired or active (API and SCIM tokens alike)."""
    import time

    if entry.get("revoked_at"):
        return "revoked"
    if entry.get("expires_at") and entry["expires_at"] <= time.time() * 1000:
        return "expired"
    return "active"


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return ", ".join(f"{key}:{item}" for key, item in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(_cell(item) for item in value) or "-"
    return str(value).replace("\n", " ")


Column = tuple[str, Any]  # (header, key of the row or a function of the row)


def show(rows: list[dict[str, Any]], columns: list[Column], *, as_json: bool,
         empty: str = "Nothing to show.") -> None:
    """``rows`` as aligned columns under their headers, or as one JSON array (``--json``)."""
    import json

    if as_json:
        click.echo(json.dumps(rows, indent=2, sort_keys=True, ensure_ascii=False, default=str))
        return
    if not rows:
        click.echo(empty, err=True)
        return
    table = [[header.upper() for header, _ in columns]] + [
        [_cell(get(row) if callable(get) else row.get(get)) for _, get in columns]
        for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    for line in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def json_option(fn: Any) -> Any:
    """``--json``: the listing as JSON, for scripts."""
    return click.option("--json", "as_json", is_flag=True,
                        help="Print JSON (for scripts) instead of columns.")(fn)


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive action when a person is at the terminal (``--yes`` skips it;
    a script, with no terminal on standard input, is not asked)."""
    import sys

    if not yes and sys.stdin.isatty():
        click.confirm(question, abort=True)


def yes_option(fn: Any) -> Any:
    return click.option("--yes", is_flag=True, help="Do not ask for confirmation.")(fn)
