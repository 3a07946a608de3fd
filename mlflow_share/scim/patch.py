"""SCIM PATCH (RFC 7644 §3.5.2): ``add``, ``remove`` and ``replace`` operations applied to a
copy of a resource's document; the caller validates and stores the result.

What identity providers send is accepted as they send it: operation names in any case
(Azure AD's ``Replace``), no ``path`` with an object of attributes (Okta), ``remove`` of
``members`` with the members to remove as ``value`` (Azure AD) as well as
``members[value eq "id"]``, and ``add``/``replace`` on ``emails[type eq "work"].value`` when
there is no work email yet (a new one is added with ``type: work``).
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

from mlflow_share.scim.filters import (
    AttrPath,
    PatchPath,
    equality_template,
    lookup,
    matches,
    parse_path,
)
from mlflow_share.scim.protocol import (
    GROUP_SCHEMA,
    USER_SCHEMA,
    InvalidPath,
    InvalidSyntax,
    InvalidValue,
    NoTarget,
)

MAX_OPERATIONS = 1000
_OPS = ("add", "remove", "replace")
_CORE = frozenset({USER_SCHEMA.lower(), GROUP_SCHEMA.lower()})


def apply_patch(document: dict[str, Any], operations: Any, *, multi_valued: Collection[str],
                extensions: Collection[str] = ()) -> dict[str, Any]:
    """The document after ``operations`` (the PatchOp's ``Operations``), applied in order.

    Args:
        document: the resource as the server would return it (not modified).
        operations: the request's ``Operations`` list.
        multi_valued: lower-case names of the multi-valued attributes.
        extensions: lower-case schema URNs whose attributes live in their own object.

    Raises:
        InvalidSyntax, InvalidPath, InvalidValue, NoTarget: a malformed or impossible
            operation (400); nothing is applied.
    """
    if not isinstance(operations, list) or not operations:
        raise InvalidSyntax("A PATCH request needs a non-empty 'Operations' list.")
    if len(operations) > MAX_OPERATIONS:
        raise InvalidSyntax(f"At most {MAX_OPERATIONS} operations per PATCH request.")
    patched = copy.deepcopy(document)
    editor = _Editor(frozenset(multi_valued), frozenset(e.lower() for e in extensions))
    for number, operation in enumerate(operations, start=1):
        if not isinstance(operation, dict):
            raise InvalidSyntax(f"Operation {number} is not an object.")
        op = lookup(operation, "op")
        if not isinstance(op, str) or op.lower() not in _OPS:
            raise InvalidSyntax(f"Operation {number}: 'op' must be add, remove or replace.")
        path = lookup(operation, "path")
        if path is not None and not isinstance(path, str):
            raise InvalidPath(f"Operation {number}: 'path' must be a string.")
        editor.apply(patched, op.lower(), parse_path(path) if path else None,
                     lookup(operation, "value"), has_value="value" in {
                         k.lower() for k in operation})
    return patched


class _Editor:
    def __init__(self, multi_valued: frozenset[str], extensions: frozenset[str]) -> None:
        self.multi_valued = multi_valued
        self.extensions = extensions

    def apply(self, document: dict[str, Any], op: str, path: PatchPath | None, value: Any,
              *, has_value: bool) -> None:
        if path is None:
            self._without_path(document, op, value)
            return
        if op != "remove" and not has_value:
            raise InvalidValue(f"'{op}' of {path.attr.name!r} needs a 'value'.")
        container = self._container(document, path.attr, create=op != "remove")
        if container is None:
            return  # removing from an extension the resource does not have
        if path.filter is not None:
            self._filtered(container, op, path, value)
        elif path.attr.sub is not None:
            self._sub_attribute(container, op, path.attr, value)
        else:
            self._attribute(container, op, path.attr.name, value)

    def _without_path(self, document: dict[str, Any], op: str, value: Any) -> None:
        if op == "remove":
            raise NoTarget("'remove' needs a 'path'.")
        if not isinstance(value, dict):
            raise InvalidValue(f"'{op}' without a 'path' needs an object of attributes.")
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidPath("Attribute names are strings.")
            if isinstance(item, dict) and self._is_extension(key):
                for name, sub_item in item.items():
                    self.apply(document, op, PatchPath(AttrPath(key, str(name))), sub_item,
                               has_value=True)
                continue
            self.apply(document, op, parse_path(key), item, has_value=True)

    def _is_extension(self, key: str) -> bool:
        """An extension schema's URN (its attributes in an object): a known one, or a URN
        named after its resource type, as extension URNs are (``...:2.0:User``)."""
        lowered = key.lower()
        return lowered in self.extensions or (
            lowered.startswith("urn:") and lowered.endswith((":user", ":group")))

    def _container(self, document: dict[str, Any], attr: AttrPath, *, create: bool
                   ) -> dict[str, Any] | None:
        if attr.schema is None or attr.schema.lower() in _CORE:
            return document
        key = _key(document, attr.schema) or attr.schema
        container = document.get(key)
        if container is None:
            if not create:
                return None
            container = document[key] = {}
        if not isinstance(container, dict):
            raise InvalidPath(f"{attr.schema!r} is not an extension of this resource.")
        return container

    def _is_multi(self, name: str, current: Any) -> bool:
        return name.lower() in self.multi_valued or isinstance(current, list)

    def _attribute(self, container: dict[str, Any], op: str, name: str, value: Any) -> None:
        key = _key(container, name) or name
        current = container.get(key)
        multi = self._is_multi(name, current)
        if op == "remove":
            if value is not None and multi and isinstance(current, list):
                gone = value if isinstance(value, list) else [value]
                container[key] = [v for v in current if not any(_same(v, g) for g in gone)]
            else:
                container.pop(key, None)
        elif multi:
            values = value if isinstance(value, list) else [value]
            if op == "replace" or not isinstance(current, list):
                container[key] = list(values)
            else:
                container[key] = current + [v for v in values
                                             if not any(_same(c, v) for c in current)]
        elif isinstance(value, dict) and isinstance(current, dict):
            # A complex attribute: the sub-attributes given replace theirs, others stay.
            for sub, item in value.items():
                current[_key(current, sub) or sub] = item
        else:
            container[key] = value

    def _sub_attribute(self, container: dict[str, Any], op: str, attr: AttrPath,
                       value: Any) -> None:
        assert attr.sub is not None
        key = _key(container, attr.name) or attr.name
        current = container.get(key)
        if isinstance(current, list):  # every value's sub-attribute
            if op == "add":
                raise InvalidPath(f"'add' to {attr.name}.{attr.sub} needs a value filter "
                                  f"({attr.name}[...].{attr.sub}).")
            for item in current:
                if isinstance(item, dict):
                    _set_or_remove(item, attr.sub, op, value)
            return
        if current is None:
            if op == "remove":
                return
            current = container[key] = {}
        if not isinstance(current, dict):
            raise InvalidPath(f"{attr.name!r} has no sub-attributes.")
        _set_or_remove(current, attr.sub, op, value)

    def _filtered(self, container: dict[str, Any], op: str, path: PatchPath,
                  value: Any) -> None:
        assert path.filter is not None
        key = _key(container, path.attr.name) or path.attr.name
        current = container.get(key)
        if current is None:
            current = []
        if not isinstance(current, list):
            raise InvalidPath(f"{path.attr.name!r} is not multi-valued: it has no value filter.")
        chosen = [item for item in current if isinstance(item, dict)
                  and matches(path.filter, item)]
        if op == "remove":
            if path.sub is None:
                container[key] = [item for item in current
                                  if not any(item is c for c in chosen)]
            else:
                for item in chosen:
                    _set_or_remove(item, path.sub, op, value)
            return
        if not chosen:
            template = equality_template(path.filter)
            if template is None:
                raise NoTarget(f"No value of {path.attr.name!r} matches the path's filter.")
            created = dict(template)
            if path.sub is not None:
                created[path.sub] = value
            elif isinstance(value, dict):
                created.update(value)
            else:
                raise InvalidValue(f"A value of {path.attr.name!r} is an object.")
            container[key] = current + [created]
            return
        for item in chosen:
            if path.sub is not None:
                _set_or_remove(item, path.sub, op, value)
            elif isinstance(value, dict):
                for sub, sub_value in value.items():
                    item[_key(item, sub) or sub] = sub_value
            else:
                raise InvalidValue(f"A value of {path.attr.name!r} is an object.")


def _key(container: dict[str, Any], name: str) -> str | None:
    """The key ``container`` holds ``name`` under, compared case-insensitively."""
    if name in container:
        return name
    lowered = name.lower()
    return next((k for k in container if isinstance(k, str) and k.lower() == lowered), None)


def _set_or_remove(container: dict[str, Any], name: str, op: str, value: Any) -> None:
    key = _key(container, name) or name
    if op == "remove":
        container.pop(key, None)
    else:
        container[key] = value


def _same(left: Any, right: Any) -> bool:
    """Two values of a multi-valued attribute are the same value: equal, or complex
    values with the same ``value`` (a member named twice is one member)."""
    if isinstance(left, dict) and isinstance(right, dict):
        a, b = lookup(left, "value"), lookup(right, "value")
        if a is not None and b is not None:
            return str(a) == str(b)
    return bool(left == right)
