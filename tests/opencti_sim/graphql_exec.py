"""Project resolved data onto the selection set pycti sent.

Resolvers return plain Python data: dicts (an object), lists, scalars.  A dict value that is callable is
a *field resolver* ``fn(args) -> value``: it is only called when the query selects that field, which keeps
the entity graph lazy (a case's ``objects`` → an observable's ``createdBy`` → ... is never built unless
asked for) and lets fields take arguments (``workEdit(id) { toProcessed(message: ...) }``).

Abstract-type handling follows GraphQL: a dict may carry ``__typename`` (its concrete type) and
``__types`` (that type plus every interface it implements); ``... on X`` applies when X is among them.
Fields the data does not hold come back as ``null`` - the simulator answers what it knows.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List

from .graphql_parser import (
    Field,
    FragmentDefinition,
    FragmentSpread,
    InlineFragment,
    Selection,
    is_included,
    resolve_value,
)

Resolver = Callable[[Dict[str, Any]], Any]


class GraphQLFieldError(Exception):
    """An error raised by a resolver; becomes an entry of the response's ``errors``.

    ``code`` is what OpenCTI puts in ``extensions.code`` and at the top-level ``name`` (pycti reads
    ``name`` first, then ``extensions.code``), so tests see the same ``ValueError`` as against OpenCTI.
    """

    def __init__(self, message: str, code: str = "FUNCTIONAL_ERROR", data: Dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.data = data or {}

    def to_graphql(self, path: List[str]) -> Dict[str, Any]:
        """The error entry as OpenCTI formats it."""
        return {
            "message": self.message,
            "name": self.code,
            "path": path,
            "extensions": {"code": self.code, "data": self.data},
        }


def type_matches(value: Dict[str, Any], type_condition: str | None) -> bool:
    """Whether ``... on type_condition`` applies to ``value``."""
    if type_condition is None:
        return True
    types = value.get("__types")
    if types is None:
        typename = value.get("__typename")
        return typename is None or typename == type_condition
    return type_condition in types


class Executor:
    """Executes one operation's selection set against resolved data."""

    def __init__(self, fragments: Dict[str, FragmentDefinition], variables: Dict[str, Any]) -> None:
        self.fragments = fragments
        self.variables = variables

    def field_args(self, fld: Field) -> Dict[str, Any]:
        """The field's arguments with variables substituted."""
        return {k: resolve_value(v, self.variables) for k, v in fld.arguments.items()}

    def collect(self, selections: List[Selection], value: Dict[str, Any]) -> List[Field]:
        """Flatten fragments that apply to ``value`` into the list of fields to answer."""
        fields: List[Field] = []
        for sel in selections:
            if not is_included(sel.directives, self.variables):
                continue
            if isinstance(sel, Field):
                fields.append(sel)
            elif isinstance(sel, InlineFragment):
                if type_matches(value, sel.type_condition):
                    fields.extend(self.collect(sel.selections, value))
            elif isinstance(sel, FragmentSpread):
                frag = self.fragments.get(sel.name)
                if frag is not None and type_matches(value, frag.type_condition):
                    fields.extend(self.collect(frag.selections, value))
        return fields

    def project(self, value: Any, selections: List[Selection] | None) -> Any:
        """Shape ``value`` like the selection set (recursively)."""
        if value is None:
            return None
        if isinstance(value, (list, tuple)):
            return [self.project(item, selections) for item in value]
        if selections is None or not isinstance(value, dict):
            return value
        out: Dict[str, Any] = {}
        for fld in self.collect(selections, value):
            key = fld.response_key
            if fld.name == "__typename":
                out[key] = value.get("__typename")
                continue
            raw = value.get(fld.name)
            if callable(raw):
                raw = raw(self.field_args(fld))
            projected = self.project(raw, fld.selections)
            out[key] = merge(out[key], projected) if key in out else projected
        return out


def merge(left: Any, right: Any) -> Any:
    """Merge two projections of the same response key (GraphQL field merging)."""
    if isinstance(left, dict) and isinstance(right, dict):
        merged = dict(left)
        for key, val in right.items():
            merged[key] = merge(merged[key], val) if key in merged else val
        return merged
    if isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
        return [merge(a, b) for a, b in zip(left, right)]
    return right if left is None else left
