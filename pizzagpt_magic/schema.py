"""Schemas for answers: the concise spec, JSON Schema dicts and Pydantic models, as one ``Schema``.

A schema is given in one of three forms, and ``as_schema`` turns each into a ``Schema``:

- a concise spec, ``"sentiment pos|neg|neu, score int: 1 to 5, reason"``;
- a JSON Schema dict describing an object;
- a Pydantic model class (Pydantic is never imported here: a class with ``model_json_schema``
  and ``model_validate`` is used as such), whose instances are then the answers.

The concise spec's grammar::

    spec   := field (SEP field)*      SEP is a newline when the spec has one, else a comma
    field  := NAME [TYPE] [":" DESCRIPTION]
    NAME   := a letter or "_", then letters, digits or "_"
    TYPE   := "str" | "int" | "float" | "bool" | "date" | LABEL ("|" LABEL)+
    LABEL  := letters, digits, "_", "-", "." (at least one)

A field without a type is ``str``; ``date`` is an ISO date (``2024-05-31``); ``a|b|c`` is one of
those labels. Every field is required. A spec that cannot be read is a ``SchemaSpecError``
naming the field.

A ``Schema`` knows its JSON Schema, the strict form OpenAI's ``response_format`` wants
(``strict_schema``), the instructions that ask for it in a prompt, its key (canonical JSON, part
of every cache key), its columns (for typed DataFrames), and checks an answer: ``parse`` finds the
JSON, validates it with ``jsonschema`` (compiled once per schema) and gives the value, or raises
a one-line ``SchemaError``. ``jsonschema`` is imported on first validation only.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Any

from .errors import ConfigurationError, SchemaError, SchemaSpecError

__all__ = [
    "SPEC_TYPES",
    "Column",
    "Schema",
    "as_schema",
    "is_model",
    "parse_spec",
    "strict_schema",
]

#: The concise spec's types and the JSON Schema each stands for.
SPEC_TYPES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "int": {"type": "integer"},
    "float": {"type": "number"},
    "bool": {"type": "boolean"},
    "date": {"type": "string", "format": "date"},
}

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LABEL = re.compile(r"[A-Za-z0-9_.\-]+")
_FIELD = re.compile(r"(?P<name>\S+)(?:\s+(?P<type>\S+))?\s*")
_RESPONSE_NAME = re.compile(r"[^A-Za-z0-9_-]+")
#: The line that introduces the schema in a prompt (the emulator recognises it).
PROMPT_INTRO = "Answer with one JSON object, and nothing else, that fits this JSON Schema:"


@dataclass(frozen=True)
class Column:
    """A top-level field of an answer: its name, its kind (``str``, ``int``, ``float``,
    ``bool``, ``date``, ``labels``, or ``object`` for anything else) and its labels."""

    name: str
    kind: str
    labels: tuple[str, ...] = ()
    description: str = ""


def is_model(value: Any) -> bool:
    """Whether ``value`` is a Pydantic model class (without importing Pydantic)."""
    return (
        isinstance(value, type)
        and callable(getattr(value, "model_json_schema", None))
        and callable(getattr(value, "model_validate", None))
    )


def parse_spec(spec: str) -> Schema:
    """The ``Schema`` of a concise spec (see the module's grammar)."""
    return _spec_schema(spec)


def _spec_error(number: int, text: str, problem: str) -> SchemaSpecError:
    shown = " ".join(text.split())
    shown = shown if len(shown) <= 60 else shown[:59] + "…"
    return SchemaSpecError(f"schema spec, field {number} ({shown!r}): {problem}")


def _spec_fields(spec: str) -> list[Column]:
    if not isinstance(spec, str):
        raise SchemaSpecError(f"a schema spec is text, not {type(spec).__name__}")
    pieces = spec.splitlines() if "\n" in spec.strip() else spec.split(",")
    columns: list[Column] = []
    seen: set[str] = set()
    number = 0
    for piece in pieces:
        if not piece.strip():
            continue
        number += 1
        head, colon, description = piece.partition(":")
        description = " ".join(description.split())
        match = _FIELD.fullmatch(head.strip())
        if match is None or not head.strip():
            raise _spec_error(number, piece, "a field is NAME [TYPE] [: description]")
        name, kind = match.group("name"), match.group("type") or "str"
        if not _NAME.fullmatch(name):
            raise _spec_error(
                number, piece, f"{name!r} cannot name a field: use letters, digits and '_'"
            )
        if name in seen:
            raise _spec_error(number, piece, f"the field {name!r} is named twice")
        seen.add(name)
        if kind in SPEC_TYPES:
            columns.append(Column(name, kind, (), description))
            continue
        labels = tuple(kind.split("|"))
        if len(labels) < 2 or not all(_LABEL.fullmatch(label) for label in labels):
            raise _spec_error(
                number,
                piece,
                f"unknown type {kind!r}; use str, int, float, bool, date or labels a|b|c",
            )
        if len(set(labels)) != len(labels):
            raise _spec_error(number, piece, f"a label is listed twice in {kind!r}")
        columns.append(Column(name, "labels", labels, description))
    if not columns:
        raise SchemaSpecError("the schema spec names no field: NAME [TYPE] [: description], ...")
    return columns


def _spec_schema(spec: str) -> Schema:
    cached = _cache.get(("spec", spec))
    if cached is not None:
        return cached
    columns = _spec_fields(spec)
    _jsonschema()  # answers are checked with it: without it, fail before anything is sent
    properties: dict[str, Any] = {}
    for column in columns:
        if column.kind == "labels":
            prop: dict[str, Any] = {"type": "string", "enum": list(column.labels)}
        else:
            prop = dict(SPEC_TYPES[column.kind])
        if column.description:
            prop["description"] = column.description
        properties[column.name] = prop
    json_schema = {
        "type": "object",
        "properties": properties,
        "required": [c.name for c in columns],
        "additionalProperties": False,
    }
    schema = Schema(json_schema, name="answer", columns=columns)
    _remember(("spec", spec), schema)
    return schema


def as_schema(value: Any) -> Schema | None:
    """``value`` as a ``Schema``: a spec, a JSON Schema dict, a Pydantic model class or a
    ``Schema``; None stays None. Made once per distinct schema, so its validator is compiled
    once however many times it is asked for."""
    if value is None or isinstance(value, Schema):
        return value
    if isinstance(value, str):
        return _spec_schema(value)
    if is_model(value):
        cached = _cache.get(("model", value))
        if cached is None:
            json_schema = value.model_json_schema()
            cached = Schema(_checked_dict(json_schema), name=value.__name__, model=value)
            _remember(("model", value), cached)
        return cached
    if isinstance(value, dict):
        try:
            canonical = json.dumps(value, sort_keys=True, ensure_ascii=False)
        except (TypeError, ValueError) as exc:
            raise SchemaSpecError(f"the schema dict is not JSON: {exc}") from None
        cached = _cache.get(("dict", canonical))
        if cached is None:
            cached = Schema(_checked_dict(value), name=str(value.get("title") or "answer"))
            _remember(("dict", canonical), cached)
        return cached
    raise SchemaSpecError(
        "a schema is a spec ('name, age int'), a JSON Schema dict or a Pydantic model class, "
        f"not {type(value).__name__}"
    )


_cache: dict[Any, Schema] = {}


def _remember(key: Any, schema: Schema) -> None:
    if len(_cache) > 256:
        _cache.clear()
    _cache[key] = schema


def _jsonschema() -> Any:
    try:
        import jsonschema
    except ImportError:
        raise ConfigurationError(
            "schemas need the jsonschema package: pip install 'pizzagpt-magic[schema]'"
        ) from None
    return jsonschema


def _checked_dict(value: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``value`` once it is known to be a JSON Schema of an object."""
    jsonschema = _jsonschema()
    try:
        jsonschema.validators.validator_for(value).check_schema(value)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise SchemaSpecError(
            f"the schema dict is not a JSON Schema{f' (at {where})' if where else ''}: "
            f"{_short(exc.message)}"
        ) from None
    if value.get("type") != "object" and "properties" not in value:
        raise SchemaSpecError(
            'a schema for answers describes an object: {"type": "object", "properties": ...}'
        )
    return copy.deepcopy(value)


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` in the form OpenAI's strict structured outputs accept: every object lists all
    its properties as required (one that was optional may be null instead) and allows no
    others."""
    return _strict(copy.deepcopy(schema))


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    for key in ("$defs", "definitions", "properties"):
        if isinstance(node.get(key), dict):
            node[key] = {name: _strict(sub) for name, sub in node[key].items()}
    for key in ("items", "anyOf", "oneOf", "allOf", "not", "additionalItems", "prefixItems"):
        if key in node:
            node[key] = _strict(node[key])
    if node.get("type") == "object" or isinstance(node.get("properties"), dict):
        properties = node.setdefault("properties", {})
        required = set(node.get("required") or ())
        for name in properties:
            if name not in required:
                properties[name] = _nullable(properties[name])
        node["required"] = list(properties)
        node["additionalProperties"] = False
    return node


def _nullable(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    node.pop("default", None)  # strict mode takes no defaults: a missing value is null
    options = node.get("anyOf")
    if isinstance(options, list) and any(
        isinstance(o, dict) and o.get("type") == "null" for o in options
    ):
        return node
    kind = node.get("type")
    if isinstance(kind, str) and "enum" not in node:
        return {**node, "type": [kind, "null"]} if kind != "null" else node
    if isinstance(kind, list):
        return node if "null" in kind else {**node, "type": [*kind, "null"]}
    return {"anyOf": [node, {"type": "null"}]}


class Schema:
    """One schema for answers; see the module's docstring. Made by ``as_schema``."""

    __slots__ = ("_columns", "_strict", "_validator", "json_schema", "key", "model", "name")

    def __init__(
        self,
        json_schema: dict[str, Any],
        *,
        name: str = "answer",
        model: Any = None,
        columns: list[Column] | None = None,
    ) -> None:
        self.json_schema = json_schema
        self.model = model
        self.name = _RESPONSE_NAME.sub("_", name).strip("_")[:64] or "answer"
        #: Canonical JSON of the schema: what the cache key and the log record hold.
        self.key = json.dumps(json_schema, sort_keys=True, ensure_ascii=False)
        self._columns = columns
        self._strict: dict[str, Any] | None = None
        self._validator: Any = None

    def __repr__(self) -> str:
        names = ", ".join(c.name for c in self.columns)
        return f"<Schema {self.name}: {names}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Schema) and (other.key, other.model) == (self.key, self.model)

    def __hash__(self) -> int:
        return hash(self.key)

    # -- asking for it ----------------------------------------------------------------------

    @property
    def strict(self) -> dict[str, Any]:
        """The strict form of the schema (``strict_schema``), made once."""
        if self._strict is None:
            self._strict = strict_schema(self.json_schema)
        return self._strict

    def response_format(self) -> dict[str, Any]:
        """The ``response_format`` of an OpenAI-compatible request asking for this schema."""
        return {
            "type": "json_schema",
            "json_schema": {"name": self.name, "schema": self.strict, "strict": True},
        }

    def instructions(self) -> str:
        """The text that asks for the schema in a prompt (for backends without
        ``response_format``)."""
        body = json.dumps(self.json_schema, indent=1, ensure_ascii=False)
        return f"{PROMPT_INTRO}\n```json\n{body}\n```"

    def repair_request(self, error: SchemaError) -> str:
        """What is said to the model after an answer that does not fit."""
        return (
            f"Your answer cannot be used. {error}. Answer again with only the "
            "corrected JSON object."
        )

    # -- checking it ------------------------------------------------------------------------

    @property
    def validator(self) -> Any:
        """The compiled ``jsonschema`` validator (dates checked as ISO dates)."""
        if self._validator is None:
            jsonschema = _jsonschema()
            cls = jsonschema.validators.validator_for(self.json_schema)
            self._validator = cls(self.json_schema, format_checker=cls.FORMAT_CHECKER)
        return self._validator

    def validate(self, data: Any, text: str = "") -> None:
        """Nothing when ``data`` fits the schema, else a one-line ``SchemaError``."""
        validator = self.validator
        if validator.is_valid(data):
            return
        from jsonschema.exceptions import best_match

        error = best_match(validator.iter_errors(data))
        path = [str(p) for p in error.absolute_path]
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [n for n in error.validator_value if n not in error.instance]
            path.append(missing[0] if missing else "")
            problem = "missing"
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            allowed = error.schema.get("properties", {})
            extra = [n for n in error.instance if n not in allowed]
            path.append(extra[0] if extra else "")
            problem = "not a field of the schema"
        else:
            problem = _short(error.message)
        field = ".".join(p for p in path if p)
        where = f"field {field!r}: " if field else ""
        raise SchemaError(f"The answer does not fit the schema: {where}{problem}", text, field)

    def parse(self, text: str) -> Any:
        """The value of an answer's text: its JSON (a fenced block or the bare object),
        validated, as a dict or an instance of the model; else a ``SchemaError``."""
        data = _json_of(text)
        self.validate(data, text)
        return self.value_of(data, text)

    def value_of(self, data: Any, text: str = "") -> Any:
        """Validated JSON as the answer's value: the dict, or the model's instance."""
        if self.model is None:
            return data
        try:
            return self.model.model_validate(data)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            errors = getattr(exc, "errors", None)
            first = errors()[0] if callable(errors) and errors() else {}
            field = ".".join(str(p) for p in first.get("loc", ()))
            problem = _short(first.get("msg") or str(exc))
            where = f"field {field!r}: " if field else ""
            raise SchemaError(
                f"The answer does not fit {self.model.__name__}: {where}{problem}", text, field
            ) from None

    def as_data(self, value: Any) -> Any:
        """An answer's value as JSON data (a model's instance dumped to a dict)."""
        if self.model is not None and isinstance(value, self.model):
            return value.model_dump(mode="json")
        return value

    # -- its shape --------------------------------------------------------------------------

    @property
    def columns(self) -> list[Column]:
        """The top-level fields, in order, with the kind each column has in a DataFrame."""
        if self._columns is None:
            self._columns = _columns_of(self.json_schema)
        return self._columns

    def spec(self) -> str:
        """The concise spec of a schema made from one."""
        columns = self.columns
        if any(c.kind == "object" for c in columns):
            raise SchemaSpecError("this schema has fields the concise spec cannot write")
        parts = []
        for c in columns:
            kind = "|".join(c.labels) if c.kind == "labels" else c.kind
            parts.append(f"{c.name} {kind}" + (f": {c.description}" if c.description else ""))
        multiline = any("," in c.description for c in columns)
        return ("\n" if multiline else ", ").join(parts)


def _json_of(text: str) -> Any:
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            pass
    from .render import extract_json

    try:
        return extract_json(text)
    except ValueError as exc:
        raise SchemaError(_short(str(exc), 160), text) from None


def _resolve(node: Any, root: dict[str, Any]) -> Any:
    """A local ``$ref`` followed, and a nullable ``anyOf`` reduced to its other member."""
    for _ in range(8):
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = root
            for part in ref[2:].split("/"):
                target = target.get(part, {}) if isinstance(target, dict) else {}
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            continue
        options = node.get("anyOf") or node.get("oneOf")
        if isinstance(options, list):
            others = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
            if len(others) == 1:
                node = others[0]
                continue
        return node
    return node


def _columns_of(json_schema: dict[str, Any]) -> list[Column]:
    columns = []
    for name, prop in (json_schema.get("properties") or {}).items():
        node = _resolve(prop, json_schema)
        node = node if isinstance(node, dict) else {}
        kind = node.get("type")
        if isinstance(kind, list):
            real = [k for k in kind if k != "null"]
            kind = real[0] if len(real) == 1 else None
        description = str(node.get("description") or prop.get("description") or "")
        enum = node.get("enum")
        if isinstance(enum, list) and enum and all(isinstance(e, str) for e in enum):
            columns.append(Column(name, "labels", tuple(enum), description))
        elif kind == "integer":
            columns.append(Column(name, "int", (), description))
        elif kind == "number":
            columns.append(Column(name, "float", (), description))
        elif kind == "boolean":
            columns.append(Column(name, "bool", (), description))
        elif kind == "string" and node.get("format") in ("date", "date-time"):
            columns.append(Column(name, "date", (), description))
        elif kind == "string":
            columns.append(Column(name, "str", (), description))
        else:
            columns.append(Column(name, "object", (), description))
    return columns
