"""Field coverage, as ``test_app`` guards route coverage: every field of every request MLflow
accepts that can name an entity or a storage location is decided (auth/fields.py), and every
route's resolver and every field check is bound. An MLflow upgrade that adds such a field
fails here until someone decides it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from mlflow_share.auth import fields
from mlflow_share.auth.fields import Check
from mlflow_share.auth.interceptor import Interceptor
from mlflow_share.policy.routes import REST_RULES, Resolver, rest_rule

# A field whose name says it may name an entity, a location, or a tag (tags name locations).
_ENTITY_NAME = re.compile(
    r"(^|_)(ids?|uuid|name|names|uri|path|location|locations|source|sources|tags?|key|link|"
    r"run|runs|experiment|model|models|trace|traces|dataset|datasets|metadata|assessment|"
    r"destination|parent|json)(_|$)"
)


def _request_messages() -> dict[str, Any]:
    from mlflow.server import handlers

    found = {}
    for _path, request_class, _methods in handlers.get_endpoints(lambda cls: cls):
        descriptor = getattr(request_class, "DESCRIPTOR", None)
        if descriptor is not None:
            found[descriptor.full_name] = descriptor
    return found


def _decided_messages() -> dict[str, Any]:
    """Messages a non-admin may send (admin-only routes are decided whole)."""
    return {key: descriptor for key, descriptor in _request_messages().items()
            if (rule := rest_rule(key)) is not None and rule.resolver is not Resolver.ADMIN}


def _entity_fields(descriptor: Any, prefix: str = "", seen: frozenset[str] = frozenset()
                   ) -> Iterator[str]:
    for field in descriptor.fields:
        path = prefix + field.name
        nested = field.message_type
        is_map = nested is not None and nested.GetOptions().map_entry
        if nested is not None and not is_map and not nested.full_name.startswith("google."):
            # A message is decided through its fields (a declared parent covers them all).
            if nested.full_name not in seen:
                yield from _entity_fields(nested, path + ".", seen | {nested.full_name})
        elif _ENTITY_NAME.search(field.name) or is_map:
            yield path


def test_every_entity_field_of_every_request_is_decided() -> None:
    undecided = sorted(
        f"{key}: {path}"
        for key, descriptor in _decided_messages().items()
        for path in _entity_fields(descriptor, seen=frozenset({key}))
        if fields.rule_for(key, path) is None
    )
    assert undecided == [], (
        "Request fields that may name an entity or a location have no decision: add each to "
        "mlflow_share/auth/fields.py with a check or the reason it is harmless.\n"
        + "\n".join(undecided))


def test_every_declared_field_exists_and_every_reason_is_written() -> None:
    """No stale or misspelt entry: on the newest MLflow supported, every declared request
    and field exists (an older one may lack fields added since)."""
    import mlflow
    from packaging.version import Version

    newest = Version(mlflow.__version__) >= Version("3.17")
    messages = _request_messages()
    missing = []
    for key, declared in fields.FIELDS.items():
        for path, rule in declared.items():
            assert rule.check is not None or len(rule.reason) > 10, f"{key}.{path}: why?"
            descriptor = messages.get(key)
            for part in path.split("."):
                if descriptor is None or part not in descriptor.fields_by_name:
                    missing.append(f"{key}: {path}")
                    break
                descriptor = descriptor.fields_by_name[part].message_type or descriptor
    if newest:
        assert missing == []


def test_every_decided_route_declares_its_fields() -> None:
    with_fields = {key for key, d in _decided_messages().items()
                   if any(True for _ in _entity_fields(d, seen=frozenset({key})))}
    assert sorted(with_fields - set(fields.FIELDS)) == []
    assert set(REST_RULES) >= set(fields.FIELDS)


def test_every_resolver_and_field_check_is_bound() -> None:
    decided_first = {Resolver.PUBLIC, Resolver.LOGIN, Resolver.AUTHENTICATED, Resolver.PAGE,
                     Resolver.ADMIN}
    assert set(Interceptor.RESOLVERS) | decided_first == set(Resolver)
    assert set(Interceptor.FIELD_CHECKS) | {Check.PRIMARY} == set(Check)
    for rule in REST_RULES.values():
        assert isinstance(rule.resolver, Resolver)


@pytest.mark.parametrize("data,path,expected", [
    ({"a": [{"b": "1"}, {"b": "2"}, {"c": "3"}]}, "a.b", ["1", "2"]),
    ({"t": {"trace_info": {"tags": {"k": "v"}}}}, "t.trace_info.tags", [{"k": "v"}]),
    ({"ids": ["x", "y"]}, "ids", ["x", "y"]),
    ({}, "a.b", []),
])
def test_values_at_walks_lists(data: dict[str, Any], path: str, expected: list[Any]) -> None:
    assert fields.values_at(data, path) == expected


def test_a_nested_field_is_covered_by_its_declared_parent() -> None:
    assert fields.rule_for("mlflow.StartTraceV3", "trace.spans.attributes.key") is not None
    assert fields.rule_for("mlflow.StartTraceV3", "trace.trace_info.nothing") is None


def test_look_alike_aliases_share_a_skeleton() -> None:
    from mlflow_share.governance.aliases import skeleton

    assert skeleton("Champion") == skeleton("champion")
    assert skeleton("ch\u0430mpion") == skeleton("champion")  # Cyrillic a
    assert skeleton("\uff43hampion") == skeleton("champion")  # full-width c
    assert skeleton("charnpion") == skeleton("champion")  # r + n
    assert skeleton("champi0n") == skeleton("champion")
    assert skeleton("challenger") != skeleton("champion")


# What MLflow's hand-written views read: ``args.get("x")``, ``request.json["x"]``, ...
_READS = re.compile(r"""\b(?:args|request\.args|request_json|request\.json|json_body|data)\s*"""
                    r"""(?:\.get(?:list)?\(\s*|\[)["'](\w+)""")
_PARSES = re.compile(r"_get_request_message\(\s*(\w+)\(")
_CALLS = re.compile(r"\b(\w+)\(")


def _source(function: Any) -> str:
    import inspect

    try:
        return inspect.getsource(inspect.unwrap(function))
    except (OSError, TypeError):
        return ""


def test_every_parameter_of_mlflows_hand_written_routes_is_decided() -> None:
    """The Flask views MLflow writes by hand (and the handlers they call) read parameters
    by name; each name must be declared for its route, or the view must parse a request
    message whose fields are declared."""
    from mlflow.server import app, handlers

    from mlflow_share.policy.routes import FLASK_RULES

    undecided = []
    for endpoint, view in app.view_functions.items():
        rule = FLASK_RULES.get(endpoint)
        if rule is None or rule.resolver in (Resolver.PUBLIC, Resolver.ADMIN, Resolver.PAGE) \
                or endpoint.startswith("mlflow_share"):
            continue
        texts = [_source(view)]
        texts += [_source(getattr(handlers, name)) for name in set(_CALLS.findall(texts[0]))
                  if callable(getattr(handlers, name, None)) and name != view.__name__]
        source = "\n".join(texts)
        for message in set(_PARSES.findall(source)):
            assert f"mlflow.{message}" in fields.FIELDS, f"{endpoint} parses {message}"
        for name in sorted(set(_READS.findall(source))):
            if fields.rule_for(f"flask:{endpoint}", name) is None:
                undecided.append(f"flask:{endpoint}: {name}")
    assert undecided == [], "\n".join(undecided)


def test_every_parameter_of_native_routes_is_decided() -> None:
    from mlflow.server import app
    from mlflow.server.fastapi_app import create_fastapi_app

    from mlflow_share.policy.routes import native_rule

    fastapi_app = create_fastapi_app(app)
    routes: list[Any] = []
    for route in fastapi_app.routes:  # included routers give their routes' contexts
        contexts = getattr(route, "effective_route_contexts", None)
        routes += list(contexts()) if contexts is not None else [route]
    undecided, seen = [], 0
    for route in routes:
        dependant = getattr(route, "dependant", None)
        name, path = getattr(route, "name", ""), getattr(route, "path", "")
        rule = native_rule(name, path)
        if dependant is None or rule is None or rule.resolver in (Resolver.ADMIN,
                                                                  Resolver.PUBLIC):
            continue
        seen += 1
        params = [p.name for p in (dependant.path_params + dependant.query_params
                                   + dependant.body_params)]
        undecided += [f"native:{name}: {p}" for p in params
                      if fields.rule_for(f"native:{name}", p) is None]
    assert seen >= 2  # at least the proxied artifact download and upload
    assert undecided == [], "\n".join(undecided)


def test_every_input_field_of_graphql_is_decided() -> None:
    """GraphQL root fields are denied unless known (auth/graphql.py); a known one's every
    input field is declared, so an MLflow upgrade that adds one is reviewed."""
    from mlflow.server.graphql.graphql_schema_extensions import schema

    from mlflow_share.auth.graphql import GRAPHQL_FIELDS

    graphql_schema = schema.graphql_schema
    undecided = []
    for root in (graphql_schema.query_type, graphql_schema.mutation_type):
        for name, field in (root.fields if root else {}).items():
            if name not in GRAPHQL_FIELDS:
                continue  # denied by the middleware: nothing to decide
            argument = field.args.get("input")
            input_type = argument.type if argument is not None else None
            while hasattr(input_type, "of_type"):
                input_type = input_type.of_type
            for input_field in getattr(input_type, "fields", {}):
                if input_field not in GRAPHQL_FIELDS[name]:
                    undecided.append(f"{name}.{input_field}")
    assert undecided == []
