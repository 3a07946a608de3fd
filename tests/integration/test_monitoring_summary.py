"""``GET /api/2.0/mlflow-share/usage/summary``: the monitoring numbers over exactly the calls of
a range, from latencies injected with known values.

The calls are recorded the way the gateway records them (``Usage.record``, two recorders and
several flushes, as two gateway processes would write one minute) into the shared server's
database, plus one older minute written with its own histogram; the route's requests, errors,
mean and nearest-rank p50/p95/p99 (overall, per version, per team) must be those of the known
latencies (within HdrHistogram's two significant digits), never averages or maxima of
per-minute percentiles.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from mlflow_share import db
from mlflow_share.gateway.usage import Usage, new_histogram, percentiles
from tests.conftest import ShareServer

SHARE = "/api/2.0/mlflow-share"
REL = 0.015  # HdrHistogram with two significant digits: within 1 %


class Recorder:
    """An audit appender that keeps the events it is given (the flushes' own events)."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def append(self, row: dict[str, Any], attempts: int = 6) -> int:
        self.events.append(row)
        return len(self.events)


def nearest_rank(values: list[float], q: int) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered) / 100)) - 1]


def _engine(server: ShareServer) -> sa.Engine:
    return db.get_engine(server.backend_uri)


def _write_minute(engine: sa.Engine, model: str, version: str, team: str, minute: int,
                  latencies_ms: list[float], errors: int) -> None:
    """One minute row as the gateway writes it: counts, the latency sum, the histogram and
    the minute's own percentiles."""
    histogram = new_histogram()
    for ms in latencies_ms:
        histogram.record_value(round(ms * 1000))
    with engine.begin() as conn:
        conn.execute(db.gateway_usage.insert().values(
            model=model, version=version, team=team, minute=minute,
            requests=len(latencies_ms) + errors, errors=errors,
            latency_sum_ms=float(sum(latencies_ms)),
            latency_histogram=histogram.encode().decode("ascii"), **percentiles(histogram)))


@pytest.fixture(scope="module")
def timed(share_server: ShareServer) -> Iterator[dict[str, Any]]:
    """A model of team-a with known calls: now, and three hours ago."""
    model = f"timed-{uuid.uuid4().hex[:8]}"
    created = share_server.api("POST", "/api/2.0/mlflow/registered-models/create",
                               token=share_server.tokens["alice"], json={"name": model})
    assert created.status_code == 200, created.text
    engine = _engine(share_server)
    first, second = Usage(engine, Recorder(), every=3600), Usage(engine, Recorder(), every=3600)
    for ms in range(1, 91):  # version 1: odd milliseconds from team-a, even from team-b
        (first if ms % 2 else second).record(model, "1", "team-a" if ms % 2 else "team-b",
                                             200, ms / 1000)
        if ms == 45:
            first.flush(everything=True)  # the same minute written in several flushes
    for _ in range(2):
        second.record(model, "2", "team-b", 200, 1.0)  # two slow calls on version 2
    second.record(model, "2", "team-b", 400, 0.0005)  # an error: counted, not timed
    first.close()
    second.close()
    old = (int(time.time() // 60) - 180) * 60_000
    _write_minute(engine, model, "1", "team-a", old, [5000.0] * 5, errors=1)
    recent = {  # (version, team) -> the latencies of its successful calls, and its errors
        ("1", "team-a"): ([float(ms) for ms in range(1, 91, 2)], 0),
        ("1", "team-b"): ([float(ms) for ms in range(2, 91, 2)], 0),
        ("2", "team-b"): ([1000.0, 1000.0], 1),
    }
    yield {"model": model, "recent": recent, "old": ([5000.0] * 5, 1), "old_minute": old}


def _summary(server: ShareServer, user: str = "alice", **params: Any) -> Any:
    response = server.api("GET", f"{SHARE}/usage/summary", token=server.tokens[user],
                          params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _check(row: dict[str, Any], latencies: list[float], errors: int) -> None:
    assert (row["requests"], row["errors"]) == (len(latencies) + errors, errors), row
    assert row["mean_ms"] == pytest.approx(sum(latencies) / len(latencies), rel=1e-9)
    for q in (50, 95, 99):
        assert row[f"p{q}_ms"] == pytest.approx(nearest_rank(latencies, q), rel=REL), (q, row)


def _merged(groups: dict[tuple[str, str], tuple[list[float], int]],
            key: Any = lambda k: ()) -> dict[Any, tuple[list[float], int]]:
    out: dict[Any, tuple[list[float], int]] = {}
    for group, (latencies, errors) in groups.items():
        previous = out.get(key(group), ([], 0))
        out[key(group)] = (previous[0] + latencies, previous[1] + errors)
    return out


def test_the_summary_is_over_exactly_the_calls_of_the_range(share_server: ShareServer,
                                                            timed: dict[str, Any]) -> None:
    model, recent = timed["model"], timed["recent"]
    since = timed["old_minute"] + 60_000  # after the old minute: only the recent calls

    # Everything: the old minute's five slow calls and its error count too.
    everything = _summary(share_server, model=model)
    assert everything["model"] == model and everything["by"] == [] and everything["since"] is None
    [row] = everything["summary"]
    all_calls = _merged({**recent, ("1", "old"): timed["old"]})[()]
    _check(row, *all_calls)

    [row] = _summary(share_server, model=model, since=since)["summary"]
    latencies, errors = _merged(recent)[()]
    _check(row, latencies, errors)
    assert row["p50_ms"] == pytest.approx(46, rel=REL)  # the 46th of 92 calls
    assert row["p95_ms"] == pytest.approx(88, rel=REL)  # not version 2's 1000 ms

    # Per version and per team: each over its own calls.
    answer = _summary(share_server, model=model, since=since, by="version")
    assert answer["by"] == ["version"]
    by_version = {r["version"]: r for r in answer["summary"]}
    expected = _merged(recent, lambda k: k[0])
    assert set(by_version) == set(expected) == {"1", "2"}
    for version, (latencies, errors) in expected.items():
        _check(by_version[version], latencies, errors)
    assert by_version["1"]["p50_ms"] == pytest.approx(45, rel=REL)
    assert by_version["1"]["p99_ms"] == pytest.approx(90, rel=REL)

    by_team = {r["team"]: r for r in _summary(share_server, model=model, since=since,
                                                by="team")["summary"]}
    expected = _merged(recent, lambda k: k[1])
    assert set(by_team) == {"team-a", "team-b"}
    for team, (latencies, errors) in expected.items():
        _check(by_team[team], latencies, errors)
    assert by_team["team-b"]["p50_ms"] == pytest.approx(48, rel=REL)
    assert by_team["team-b"]["p99_ms"] == pytest.approx(1000, rel=REL)

    # Both at once (repeated or comma-separated), in the order version, team.
    for params in ({"by": ["team", "version"]}, {"by": "version,team"}):
        answer = _summary(share_server, model=model, since=since, **params)
        assert answer["by"] == ["version", "team"]
        groups = {(r["version"], r["team"]): r for r in answer["summary"]}
        assert set(groups) == set(recent)
        for group, (latencies, errors) in recent.items():
            _check(groups[group], latencies, errors)


def test_the_summary_is_not_the_per_minute_figures(share_server: ShareServer,
                                                   timed: dict[str, Any]) -> None:
    """What a page computing from the minute rows would show differs from the calls'."""
    model, since = timed["model"], timed["old_minute"] + 60_000
    rows = share_server.api("GET", f"{SHARE}/usage", token=share_server.tokens["alice"],
                            params={"model": model, "since": since}).json()["usage"]
    [row] = _summary(share_server, model=model, since=since)["summary"]
    assert sum(r["requests"] for r in rows) == row["requests"]
    worst_p95 = max(r["p95_ms"] for r in rows if r["p95_ms"] is not None)
    assert worst_p95 == pytest.approx(1000, rel=REL)
    assert row["p95_ms"] == pytest.approx(88, rel=REL)


def test_who_may_read_the_summary_and_bad_arguments(share_server: ShareServer,
                                                    timed: dict[str, Any]) -> None:
    model = timed["model"]
    url = f"{SHARE}/usage/summary"
    # Like GET usage: whoever may read the model (an org admin too), nobody else.
    admin = share_server.api("GET", url, auth=share_server.admin_auth(), params={"model": model})
    assert admin.status_code == 200 and admin.json()["summary"][0]["requests"] > 0
    for user in ("carl", "bob", "nobody"):
        denied = share_server.api("GET", url, token=share_server.tokens[user],
                                  params={"model": model})
        assert denied.status_code == 403, (user, denied.text)
        assert denied.json()["error_code"] == "PERMISSION_DENIED"
        assert model in denied.json()["message"]
    anonymous = share_server.api("GET", url, params={"model": model})
    assert anonymous.status_code == 401
    assert anonymous.json()["error_code"] == "UNAUTHENTICATED"
    missing = share_server.api("GET", url, token=share_server.tokens["alice"],
                               params={"model": f"no-such-{uuid.uuid4().hex[:8]}"})
    assert missing.status_code == 404
    assert missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    for bad in ({}, {"model": ""}, {"model": model, "since": "soon"},
                {"model": model, "since": "-5"}, {"model": model, "by": "minute"},
                {"model": model, "by": "version,model"}):
        response = share_server.api("GET", url, token=share_server.tokens["alice"], params=bad)
        assert response.status_code == 400, (bad, response.text)
        body = response.json()
        assert body["error_code"] == "INVALID_PARAMETER_VALUE" and body["message"], bad

    # A model nobody called: nothing to summarise, in all or per group.
    quiet = f"quiet-{uuid.uuid4().hex[:8]}"
    assert share_server.api("POST", "/api/2.0/mlflow/registered-models/create",
                            token=share_server.tokens["alice"], json={"name": quiet}).ok
    for by in (None, "version", "team"):
        params = {"model": quiet, **({"by": by} if by else {})}
        assert _summary(share_server, **params)["summary"] == []


def test_reading_the_summary_is_audited_by_its_name(share_server: ShareServer,
                                                    timed: dict[str, Any]) -> None:
    model = timed["model"]
    request_id = f"summary-{uuid.uuid4().hex[:8]}"
    assert share_server.api("GET", f"{SHARE}/usage/summary", token=share_server.tokens["alice"],
                            params={"model": model, "by": "team"},
                            headers={"X-Request-Id": request_id}).status_code == 200
    for action in ("usage.summary", "flask:mlflow_share_usage.summary"):
        events = share_server.api("GET", f"{SHARE}/audit/events", auth=share_server.admin_auth(),
                                  params={"action": action, "resource": model,
                                          "principal": "alice", "max_results": 1000}
                                  ).json()["events"]
        mine = [e for e in events if e["request_id"] == request_id]
        assert len(mine) == 1, (action, events)
        assert mine[0]["action"] == "usage.summary"
        assert mine[0]["stored_action"] == "flask:mlflow_share_usage.summary"
        assert mine[0]["decision"] == "allow" and mine[0]["status"] == 200
        assert mine[0]["owner_team"] == "team-a"
    # A maintainer of the owner team sees it under the same name.
    seen = share_server.api("GET", f"{SHARE}/audit/events", token=share_server.tokens["alice"],
                            params={"action": "usage.summary", "resource": model,
                                    "max_results": 1000}).json()["events"]
    assert request_id in [e["request_id"] for e in seen]


def test_a_consuming_team_sees_only_its_own_calls(share_server: ShareServer,
                                                  timed: dict[str, Any]) -> None:
    """Usage names the teams that call a model and how much: the owner team's members and
    the model's managers see every consumer; a consuming team only its own calls (as it sees
    only its own routes in the model's access)."""
    model, recent = timed["model"], timed["recent"]
    grants = [{"model": model, "team": team, "permission": "read"} for team in ("team-b", "team-c")]
    for grant in grants:
        assert share_server.api("POST", f"{SHARE}/grants", token=share_server.tokens["alice"],
                                json=grant).status_code == 200
    try:
        def teams(user: str, route: str, **params: Any) -> set[str]:
            found = share_server.api("GET", f"{SHARE}/{route}", token=share_server.tokens[user],
                                     params={"model": model, **params})
            assert found.status_code == 200, found.text
            rows = found.json()["usage" if route == "usage" else "summary"]
            return {row["team"] for row in rows}

        for user in ("alice", "aaron", "ava"):  # team-a: every consumer
            assert teams(user, "usage") == {"team-a", "team-b"}
            assert teams(user, "usage/summary", by="team") == {"team-a", "team-b"}
        assert teams("bea", "usage") == {"team-b"}
        assert teams("bea", "usage/summary", by="team") == {"team-b"}
        assert teams("carl", "usage") == set()
        # The overall figures are over the consumer's own calls only.
        overall = _summary(share_server, "bea", model=model)["summary"]
        own = _merged({key: value for key, value in recent.items() if key[1] == "team-b"})[()]
        assert len(overall) == 1
        _check(overall[0], *own)
        assert _summary(share_server, "carl", model=model)["summary"] == []
    finally:
        for grant in grants:
            share_server.api("DELETE", f"{SHARE}/grants", token=share_server.tokens["alice"],
                             json=grant)
