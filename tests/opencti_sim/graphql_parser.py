"""A small GraphQL document parser.

pycti sends hand-written GraphQL documents (big selection sets, inline fragments on concrete types,
aliases such as ``name_alt: name``, arguments that are variables or literals).  The simulator answers
them by *projecting* its own data onto the selection set that was really sent, so that every response
has exactly the shape pycti asked for.  That needs a parser, but not a schema: this module turns the
query text into plain dataclasses and resolves variables; nothing here knows about OpenCTI.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union


class GraphQLSyntaxError(ValueError):
    """The document cannot be parsed (answered like a GraphQL validation failure)."""


@dataclass
class Variable:
    """A ``$name`` reference inside an argument value, resolved at execution time."""

    name: str


@dataclass
class Field:
    """One selected field: ``alias: name(args) @directives { selections }``."""

    name: str
    alias: Optional[str] = None
    arguments: Dict[str, Any] = field(default_factory=dict)
    selections: Optional[List["Selection"]] = None
    directives: List["Directive"] = field(default_factory=list)

    @property
    def response_key(self) -> str:
        """The key the field's value appears under in the response."""
        return self.alias or self.name


@dataclass
class InlineFragment:
    """``... on Type { selections }`` (``type_condition`` is None for a bare ``... { }``)."""

    type_condition: Optional[str]
    selections: List["Selection"]
    directives: List["Directive"] = field(default_factory=list)


@dataclass
class FragmentSpread:
    """``...Name`` referring to a named fragment of the document."""

    name: str
    directives: List["Directive"] = field(default_factory=list)


@dataclass
class Directive:
    """``@name(args)``; only ``@include`` and ``@skip`` change anything."""

    name: str
    arguments: Dict[str, Any] = field(default_factory=dict)


Selection = Union[Field, InlineFragment, FragmentSpread]


@dataclass
class FragmentDefinition:
    """``fragment Name on Type { selections }``."""

    name: str
    type_condition: str
    selections: List[Selection]


@dataclass
class Operation:
    """A query or mutation with its name (pycti always names them) and root selections."""

    kind: str
    name: Optional[str]
    selections: List[Selection]
    variable_defaults: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Document:
    """The parsed request document."""

    operations: List[Operation]
    fragments: Dict[str, FragmentDefinition]

    def operation(self, name: Optional[str] = None) -> Operation:
        """Pick the operation to run, as a GraphQL server does with ``operationName``."""
        if name:
            for op in self.operations:
                if op.name == name:
                    return op
            raise GraphQLSyntaxError(f'Unknown operation named "{name}".')
        if len(self.operations) != 1:
            raise GraphQLSyntaxError("Must provide operation name if query contains multiple operations.")
        return self.operations[0]


_TOKEN_RE = re.compile(
    r"""
    (?P<ignored>[\s,\ufeff]+|\#[^\n\r]*)
  | (?P<spread>\.\.\.)
  | (?P<block>\"\"\"(?:\\\"\"\"|(?!\"\"\").|\n)*?\"\"\")
  | (?P<string>"(?:\\.|[^"\\\n])*")
  | (?P<number>-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[_A-Za-z][_0-9A-Za-z]*)
  | (?P<punct>[!$&()\:=@\[\]{|}])
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass
class _Token:
    kind: str
    value: str
    pos: int


def _tokenize(text: str) -> List[_Token]:
    tokens: List[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            raise GraphQLSyntaxError(f"Syntax Error: Unexpected character {text[pos]!r} at {pos}.")
        kind = match.lastgroup or ""
        if kind != "ignored":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(_Token("eof", "", pos))
    return tokens


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(raw: str) -> str:
    out: List[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            if nxt == "u":
                out.append(chr(int(raw[i + 2:i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


class _Parser:
    """Recursive-descent parser over the token list (GraphQL executable definitions only)."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.index = 0

    # -- token helpers -------------------------------------------------------------------------
    def peek(self, value: Optional[str] = None, kind: Optional[str] = None) -> bool:
        tok = self.tokens[self.index]
        if value is not None and tok.value != value:
            return False
        return kind is None or tok.kind == kind

    def advance(self) -> _Token:
        tok = self.tokens[self.index]
        self.index += 1
        return tok

    def expect(self, value: Optional[str] = None, kind: Optional[str] = None) -> _Token:
        if not self.peek(value, kind):
            tok = self.tokens[self.index]
            wanted = value or kind
            raise GraphQLSyntaxError(f"Syntax Error: Expected {wanted}, found {tok.value or tok.kind!r} at {tok.pos}.")
        return self.advance()

    # -- grammar -------------------------------------------------------------------------------
    def document(self) -> Document:
        operations: List[Operation] = []
        fragments: Dict[str, FragmentDefinition] = {}
        while not self.peek(kind="eof"):
            if self.peek("{"):
                operations.append(Operation("query", None, self.selection_set()))
            elif self.peek("fragment", "name"):
                frag = self.fragment_definition()
                fragments[frag.name] = frag
            elif self.peek(kind="name") and self.tokens[self.index].value in ("query", "mutation", "subscription"):
                operations.append(self.operation_definition())
            else:
                tok = self.tokens[self.index]
                raise GraphQLSyntaxError(f"Syntax Error: Unexpected {tok.value!r} at {tok.pos}.")
        if not operations:
            raise GraphQLSyntaxError("Syntax Error: the document holds no operation.")
        return Document(operations, fragments)

    def operation_definition(self) -> Operation:
        kind = self.advance().value
        name = self.advance().value if self.peek(kind="name") else None
        defaults: Dict[str, Any] = {}
        if self.peek("("):
            defaults = self.variable_definitions()
        self.directives()
        return Operation(kind, name, self.selection_set(), defaults)

    def variable_definitions(self) -> Dict[str, Any]:
        defaults: Dict[str, Any] = {}
        self.expect("(")
        while not self.peek(")"):
            self.expect("$")
            name = self.expect(kind="name").value
            self.expect(":")
            self.type_reference()
            if self.peek("="):
                self.advance()
                defaults[name] = self.value(const=True)
            self.directives()
        self.expect(")")
        return defaults

    def type_reference(self) -> None:
        if self.peek("["):
            self.advance()
            self.type_reference()
            self.expect("]")
        else:
            self.expect(kind="name")
        if self.peek("!"):
            self.advance()

    def fragment_definition(self) -> FragmentDefinition:
        self.expect("fragment")
        name = self.expect(kind="name").value
        self.expect("on")
        type_condition = self.expect(kind="name").value
        self.directives()
        return FragmentDefinition(name, type_condition, self.selection_set())

    def selection_set(self) -> List[Selection]:
        self.expect("{")
        selections: List[Selection] = []
        while not self.peek("}"):
            selections.append(self.selection())
        self.expect("}")
        return selections

    def selection(self) -> Selection:
        if self.peek(kind="spread"):
            self.advance()
            if self.peek("on", "name"):
                self.advance()
                type_condition = self.expect(kind="name").value
                directives = self.directives()
                return InlineFragment(type_condition, self.selection_set(), directives)
            if self.peek(kind="name"):
                name = self.advance().value
                return FragmentSpread(name, self.directives())
            directives = self.directives()
            return InlineFragment(None, self.selection_set(), directives)
        first = self.expect(kind="name").value
        alias = None
        name = first
        if self.peek(":"):
            self.advance()
            alias = first
            name = self.expect(kind="name").value
        arguments = self.arguments() if self.peek("(") else {}
        directives = self.directives()
        selections = self.selection_set() if self.peek("{") else None
        return Field(name, alias, arguments, selections, directives)

    def arguments(self) -> Dict[str, Any]:
        args: Dict[str, Any] = {}
        self.expect("(")
        while not self.peek(")"):
            name = self.expect(kind="name").value
            self.expect(":")
            args[name] = self.value()
        self.expect(")")
        return args

    def directives(self) -> List[Directive]:
        found: List[Directive] = []
        while self.peek("@"):
            self.advance()
            name = self.expect(kind="name").value
            found.append(Directive(name, self.arguments() if self.peek("(") else {}))
        return found

    def value(self, const: bool = False) -> Any:
        tok = self.tokens[self.index]
        if tok.value == "$" and tok.kind == "punct" and not const:
            self.advance()
            return Variable(self.expect(kind="name").value)
        if tok.value == "[":
            self.advance()
            items = []
            while not self.peek("]"):
                items.append(self.value(const))
            self.advance()
            return items
        if tok.value == "{":
            self.advance()
            obj: Dict[str, Any] = {}
            while not self.peek("}"):
                key = self.expect(kind="name").value
                self.expect(":")
                obj[key] = self.value(const)
            self.advance()
            return obj
        self.advance()
        if tok.kind == "string":
            return _unescape(tok.value[1:-1])
        if tok.kind == "block":
            return tok.value[3:-3].replace('\\"""', '"""')
        if tok.kind == "number":
            return float(tok.value) if any(c in tok.value for c in ".eE") else int(tok.value)
        if tok.kind == "name":
            return {"true": True, "false": False, "null": None}.get(tok.value, tok.value)
        raise GraphQLSyntaxError(f"Syntax Error: Unexpected {tok.value!r} at {tok.pos}.")


def parse(text: str) -> Document:
    """Parse a GraphQL request document."""
    return _Parser(text).document()


def resolve_value(value: Any, variables: Dict[str, Any]) -> Any:
    """Replace :class:`Variable` references by the request's variable values (missing → None)."""
    if isinstance(value, Variable):
        return variables.get(value.name)
    if isinstance(value, list):
        return [resolve_value(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: resolve_value(v, variables) for k, v in value.items()}
    return value


def is_included(directives: List[Directive], variables: Dict[str, Any]) -> bool:
    """Apply ``@include(if:)`` / ``@skip(if:)``."""
    for directive in directives:
        condition = resolve_value(directive.arguments.get("if"), variables)
        if directive.name == "include" and not condition:
            return False
        if directive.name == "skip" and condition:
            return False
    return True


def root_field_names(operation: Operation, fragments: Dict[str, FragmentDefinition]) -> List[str]:
    """The root fields an operation selects (used to name operations in the recording)."""
    names: List[str] = []

    def walk(selections: List[Selection]) -> None:
        for sel in selections:
            if isinstance(sel, Field):
                names.append(sel.name)
            elif isinstance(sel, InlineFragment):
                walk(sel.selections)
            elif sel.name in fragments:
                walk(fragments[sel.name].selections)

    walk(operation.selections)
    return names
