"""SCIM filters and attribute paths (RFC 7644 §3.4.2.2 and §3.5.2): parsed into a small
tree, and evaluated against a resource's JSON document.

Grammar (``and`` binds tighter than ``or``; ``not`` needs parentheses)::

    FILTER    = attrExp / logExp / valuePath / "not" "(" FILTER ")" / "(" FILTER ")"
    valuePath = attrPath "[" valFilter "]"          (valFilter: a FILTER without valuePath)
    attrExp   = attrPath "pr" / attrPath compareOp compValue
    compareOp = eq / ne / co / sw / ew / gt / lt / ge / le
    compValue = false / null / true / number / string     (JSON)
    attrPath  = [URI ":"] ATTRNAME ["." subAttr]
    PATH      = attrPath / valuePath ["." subAttr]         (PATCH operations' "path")

Attribute names and operators are case-insensitive, and so are string comparisons except on
the attributes RFC 7643 makes case-exact (``id``, ``externalId``, ``meta.version``). A filter
that does not parse is ``InvalidFilter`` (a path: ``InvalidPath``), naming where it stopped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Union

from mlflow_share.scim.protocol import (
    GROUP_SCHEMA,
    USER_SCHEMA,
    InvalidFilter,
    InvalidPath,
    ScimInvalid,
)

MAX_FILTER_LENGTH = 4096
MAX_DEPTH = 32  # nested parentheses: a filter is no way to exhaust the stack
OPERATORS = frozenset({"eq", "ne", "co", "sw", "ew", "gt", "lt", "ge", "le"})
_STRING_OPERATORS = frozenset({"co", "sw", "ew"})
_ORDERING_OPERATORS = frozenset({"gt", "lt", "ge", "le"})
_CORE_SCHEMAS = frozenset({USER_SCHEMA.lower(), GROUP_SCHEMA.lower()})
_CASE_EXACT = frozenset({"id", "externalid", "meta.version"})

_NAME = r"\$?[A-Za-z][A-Za-z0-9_-]*"
_ATTRIBUTE = re.compile(rf"({_NAME})(?:\.({_NAME}))?")
_SUB_ATTRIBUTE = re.compile(rf"\.({_NAME})")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<punct>[()\[\]])
  | (?P<string>"(?:[^"\\\x00-\x1f]|\\.)*")
  | (?P<word>[^\s()\[\]"]+)
""", re.VERBOSE)


@dataclass(frozen=True)
class AttrPath:
    """``[schema:]name[.sub]``, names as written (compared case-insensitively)."""

    schema: str | None
    name: str
    sub: str | None = None

    @property
    def dotted(self) -> str:
        return f"{self.name}.{self.sub}".lower() if self.sub else self.name.lower()


@dataclass(frozen=True)
class Compare:
    path: AttrPath
    op: str  # one of OPERATORS, lower case
    value: Any  # str, int, float, bool or None


@dataclass(frozen=True)
class Present:
    path: AttrPath


@dataclass(frozen=True)
class And:
    left: Filter
    right: Filter


@dataclass(frozen=True)
class Or:
    left: Filter
    right: Filter


@dataclass(frozen=True)
class Not:
    inner: Filter


@dataclass(frozen=True)
class ValuePath:
    """``path[filter]``: some value of the multi-valued ``path`` matches ``filter``."""

    path: AttrPath
    filter: Filter


Filter = Union[Compare, Present, And, Or, Not, ValuePath]


@dataclass(frozen=True)
class PatchPath:
    """A PATCH operation's target: ``attr``, ``attr.sub``, ``attr[filter]`` or
    ``attr[filter].sub``."""

    attr: AttrPath
    filter: Filter | None = None
    sub: str | None = None


@dataclass(frozen=True)
class _Token:
    kind: str  # "(", ")", "[", "]", "string" or "word"
    text: str
    pos: int
    value: Any = None


def _tokenize(text: str, error: type[ScimInvalid]) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:  # only an unterminated or broken string stops the scanner
            raise error(f"Unterminated string at position {pos + 1} of {_shown(text)}.")
        kind = match.lastgroup or ""
        if kind == "punct":
            tokens.append(_Token(match.group(), match.group(), pos))
        elif kind == "string":
            try:
                value = json.loads(match.group())
            except ValueError:
                raise error(f"Invalid string at position {pos + 1} of {_shown(text)}.") from None
            tokens.append(_Token("string", match.group(), pos, value))
        elif kind == "word":
            tokens.append(_Token("word", match.group(), pos))
        pos = match.end()
    return tokens


def _shown(text: str) -> str:
    return repr(text if len(text) <= 200 else text[:200] + "...")


class _Parser:
    def __init__(self, text: str, error: type[ScimInvalid]) -> None:
        self.text = text
        self.error = error
        self.tokens = _tokenize(text, error)
        self.index = 0
        self.depth = 0
        self.in_value_path = False

    def fail(self, what: str, token: _Token | None = None) -> ScimInvalid:
        where = f"at position {token.pos + 1}" if token is not None else "at its end"
        return self.error(f"Invalid filter {_shown(self.text)}: {what} {where}.")

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def take(self, what: str) -> _Token:
        token = self.peek()
        if token is None:
            raise self.fail(f"expected {what}")
        self.index += 1
        return token

    def expect(self, kind: str) -> None:
        token = self.take(f"'{kind}'")
        if token.kind != kind:
            raise self.fail(f"expected '{kind}', found {token.text[:50]!r}", token)

    def at_word(self, word: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "word" and token.text.lower() == word

    def end(self) -> None:
        token = self.peek()
        if token is not None:
            raise self.fail(f"unexpected {token.text[:50]!r}", token)

    def filter(self) -> Filter:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"more than {MAX_DEPTH} levels of nesting", self.peek())
        node = self.term()
        while self.at_word("or"):
            self.index += 1
            node = Or(node, self.term())
        self.depth -= 1
        return node

    def term(self) -> Filter:
        node = self.factor()
        while self.at_word("and"):
            self.index += 1
            node = And(node, self.factor())
        return node

    def factor(self) -> Filter:
        token = self.take("an attribute, 'not' or '('")
        following = self.peek()
        if token.kind == "(":
            node = self.filter()
            self.expect(")")
            return node
        if token.kind == "word" and token.text.lower() == "not" \
                and following is not None and following.kind == "(":
            self.index += 1
            node = self.filter()
            self.expect(")")
            return Not(node)
        if token.kind != "word":
            raise self.fail(f"expected an attribute, found {token.text[:50]!r}", token)
        path = self.attr_path(token)
        if following is not None and following.kind == "[":
            if self.in_value_path or path.sub is not None:
                raise self.fail("a value filter here is not allowed", following)
            self.index += 1
            self.in_value_path = True
            inner = self.filter()
            self.in_value_path = False
            self.expect("]")
            return ValuePath(path, inner)
        operator = self.take("an operator")
        op = operator.text.lower()
        if operator.kind != "word" or (op != "pr" and op not in OPERATORS):
            raise self.fail(f"expected an operator (eq, ne, co, sw, ew, gt, lt, ge, le, pr), "
                            f"found {operator.text[:50]!r}", operator)
        if op == "pr":
            return Present(path)
        value_token = self.take("a value")
        value = self.comp_value(value_token)
        if op in _STRING_OPERATORS and not isinstance(value, str):
            raise self.fail(f"'{op}' compares with a string", value_token)
        if op in _ORDERING_OPERATORS and (value is None or isinstance(value, bool)):
            raise self.fail(f"'{op}' compares with a string, number or date", value_token)
        return Compare(path, op, value)

    def comp_value(self, token: _Token) -> Any:
        if token.kind == "string":
            return token.value
        if token.kind == "word":
            literal = token.text.lower()
            if literal in ("true", "false"):
                return literal == "true"
            if literal == "null":
                return None
            if _NUMBER.fullmatch(token.text):
                return json.loads(token.text)
        raise self.fail("expected a value (a quoted string, number, true, false or null), "
                        f"found {token.text[:50]!r}", token)

    def attr_path(self, token: _Token) -> AttrPath:
        schema: str | None = None
        rest = token.text
        if ":" in rest:
            schema, _, rest = rest.rpartition(":")
            if not schema.lower().startswith("urn:"):
                raise self.fail(f"{token.text[:80]!r} is not an attribute path", token)
        match = _ATTRIBUTE.fullmatch(rest)
        if match is None:
            raise self.fail(f"{token.text[:80]!r} is not an attribute path", token)
        return AttrPath(schema, match.group(1), match.group(2))


def parse_filter(text: str) -> Filter:
    """Parse a ``filter`` query parameter.

    Raises:
        InvalidFilter: it is not a filter (400, ``invalidFilter``).
    """
    if not text.strip():
        raise InvalidFilter("The filter is empty.")
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidFilter(f"The filter is longer than {MAX_FILTER_LENGTH} characters.")
    parser = _Parser(text, InvalidFilter)
    node = parser.filter()
    parser.end()
    return node


def parse_attribute(text: str) -> AttrPath:
    """Parse one name of an ``attributes`` or ``excludedAttributes`` list.

    Raises:
        InvalidPath: it is not an attribute path.
    """
    parser = _Parser(text.strip(), InvalidPath)
    token = parser.take("an attribute")
    if token.kind != "word":
        raise parser.fail("expected an attribute", token)
    path = parser.attr_path(token)
    parser.end()
    return path


def parse_path(text: str) -> PatchPath:
    """Parse a PATCH operation's ``path``.

    Raises:
        InvalidPath: it is not an attribute path (400, ``invalidPath``).
    """
    if not text.strip() or len(text) > MAX_FILTER_LENGTH:
        raise InvalidPath(f"Invalid path {_shown(text)}.")
    parser = _Parser(text, InvalidPath)
    first = parser.take("an attribute")
    if first.kind != "word":
        raise parser.fail("expected an attribute", first)
    attr = parser.attr_path(first)
    value_filter: Filter | None = None
    sub: str | None = None
    bracket = parser.peek()
    if bracket is not None and bracket.kind == "[":
        if attr.sub is not None:
            raise parser.fail("a value filter here is not allowed", bracket)
        parser.index += 1
        parser.in_value_path = True
        value_filter = parser.filter()
        parser.expect("]")
        after = parser.peek()
        if after is not None and after.kind == "word":
            match = _SUB_ATTRIBUTE.fullmatch(after.text)
            if match is None:
                raise parser.fail(f"unexpected {after.text[:50]!r}", after)
            sub = match.group(1)
            parser.index += 1
    parser.end()
    return PatchPath(attr, value_filter, sub)


# -- evaluation ----------------------------------------------------------------------------
def lookup(container: Any, name: str) -> Any:
    """``container[name]`` with the name compared case-insensitively (``None`` if absent)."""
    if not isinstance(container, Mapping):
        return None
    if name in container:
        return container[name]
    lowered = name.lower()
    for key, value in container.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


def _values(resource: Mapping[str, Any], path: AttrPath) -> list[Any]:
    """Every value at ``path``: a multi-valued attribute gives each of its values."""
    container: Any = resource
    if path.schema is not None and path.schema.lower() not in _CORE_SCHEMAS:
        container = lookup(resource, path.schema)  # an extension's attributes
    value = lookup(container, path.name)
    items = value if isinstance(value, list) else ([] if value is None else [value])
    if path.sub is None:
        return items
    found: list[Any] = []
    for item in items:
        sub_value = lookup(item, path.sub)
        if isinstance(sub_value, list):
            found.extend(sub_value)
        elif sub_value is not None:
            found.append(sub_value)
    return found


def _present(value: Any) -> bool:
    return value is not None and value != "" and value != [] and value != {}


def _as_datetime(text: str) -> datetime | None:
    if not _DATETIME.match(text):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _ordered(op: str, left: Any, right: Any) -> bool:
    if op == "gt":
        return bool(left > right)
    if op == "ge":
        return bool(left >= right)
    if op == "lt":
        return bool(left < right)
    return bool(left <= right)


def _compare(op: str, actual: Any, expected: Any, case_exact: bool) -> bool:
    """One value against the filter's value (``ne`` and ``null`` are handled by the caller)."""
    if isinstance(actual, Mapping):  # a complex value without a sub-attribute: its "value"
        actual = lookup(actual, "value")
    if actual is None:
        return False
    if isinstance(expected, bool) or isinstance(actual, bool):
        if isinstance(actual, str) and actual.lower() in ("true", "false"):
            actual = actual.lower() == "true"
        return isinstance(actual, bool) and isinstance(expected, bool) and actual == expected
    if isinstance(expected, (int, float)):
        if not isinstance(actual, (int, float)):
            return False
        return actual == expected if op == "eq" else _ordered(op, actual, expected)
    if not isinstance(actual, str) or not isinstance(expected, str):
        return False
    if op in _ORDERING_OPERATORS:
        when, bound = _as_datetime(actual), _as_datetime(expected)
        if when is not None and bound is not None:
            try:
                return _ordered(op, when, bound)
            except TypeError:  # one with a time zone, one without
                return False
    if not case_exact:
        actual, expected = actual.casefold(), expected.casefold()
    if op == "eq":
        return actual == expected
    if op == "co":
        return expected in actual
    if op == "sw":
        return actual.startswith(expected)
    if op == "ew":
        return actual.endswith(expected)
    return _ordered(op, actual, expected)


def matches(node: Filter, resource: Mapping[str, Any]) -> bool:
    """Whether ``resource`` (a SCIM document, or one value of a multi-valued attribute
    inside a value filter) satisfies ``node``. An attribute it lacks matches nothing but
    ``ne`` (and ``eq null``)."""
    if isinstance(node, And):
        return matches(node.left, resource) and matches(node.right, resource)
    if isinstance(node, Or):
        return matches(node.left, resource) or matches(node.right, resource)
    if isinstance(node, Not):
        return not matches(node.inner, resource)
    if isinstance(node, Present):
        return any(_present(value) for value in _values(resource, node.path))
    if isinstance(node, ValuePath):
        return any(isinstance(item, Mapping) and matches(node.filter, item)
                   for item in _values(resource, node.path))
    values = [value for value in _values(resource, node.path) if _present(value)]
    if node.value is None:  # eq null: absent; ne null: present
        return not values if node.op == "eq" else bool(values)
    case_exact = node.path.dotted in _CASE_EXACT
    if node.op == "ne":
        return not any(_compare("eq", value, node.value, case_exact) for value in values)
    return any(_compare(node.op, value, node.value, case_exact) for value in values)


def required_equality(node: Filter, names: Collection[str]) -> tuple[str, str] | None:
    """An ``attr eq "text"`` every match must satisfy (the filter itself, or a side of a
    top-level ``and``) on one of ``names`` (lower case): ``(name, text)``, for a store to
    look up first. The whole filter still decides."""
    if isinstance(node, And):
        return required_equality(node.left, names) or required_equality(node.right, names)
    if isinstance(node, Compare) and node.op == "eq" and isinstance(node.value, str) \
            and node.path.sub is None and node.path.name.lower() in names \
            and (node.path.schema is None or node.path.schema.lower() in _CORE_SCHEMAS):
        return node.path.name.lower(), node.value
    return None


def equality_template(node: Filter) -> dict[str, Any] | None:
    """The values a new element must have to match a value filter of ``eq`` comparisons
    joined by ``and`` (``type eq "work"`` → ``{"type": "work"}``); ``None`` for any other."""
    if isinstance(node, And):
        left, right = equality_template(node.left), equality_template(node.right)
        return None if left is None or right is None else {**left, **right}
    if isinstance(node, Compare) and node.op == "eq" and node.path.sub is None \
            and node.path.schema is None and node.value is not None:
        return {node.path.name: node.value}
    return None
