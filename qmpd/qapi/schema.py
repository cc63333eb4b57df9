"""The command and event definitions in ``schema/``, loaded once.

``schema/`` is the single source of truth: one JSON Schema (2020-12) document
per command (its root validates the arguments, ``$defs.returns`` describes
the return value, ``x-qmp`` carries QAPI's flags), one per event (its root
describes ``data``), and one per named type.  Validation, dispatch,
``query-commands`` and ``query-qmp-schema`` are all derived from these
documents; schema/README.md describes the conventions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import jsonschema
import referencing
import referencing.jsonschema

from qmpd.inttypes import INT_RANGES as RANGES

#: Base URI of every schema document; ``$id`` = base + relative path.
SCHEMA_BASE = "https://qmpd.dev/schema/"


def _is_integer(_checker: object, instance: object) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(_checker: object, instance: object) -> bool:
    return isinstance(instance, int | float) and not isinstance(instance, bool)


#: Value ranges of QAPI's integer types (``x-qapi-type``); uint64 also takes negative
#: int64 input, which QEMU keeps for compatibility.
INT_RANGES: dict[str, tuple[int, int]] = {
    **RANGES,
    "uint64": (-(1 << 63), (1 << 64) - 1),
    "size": (-(1 << 63), (1 << 64) - 1),
}


def _qapi_type(validator: Any, qapi_type: str, instance: Any, schema: JSONSchema) -> Iterator[Any]:
    """The ``x-qapi-type`` keyword: an integer must fit its QAPI type."""
    if not _is_integer(None, instance):
        return
    low, high = INT_RANGES[qapi_type]
    if qapi_type.startswith("uint") and instance < 0 and qapi_type not in ("uint64", "size"):
        instance += 1 << 64
    if not low <= instance <= high:
        yield jsonschema.ValidationError(f"{instance} does not fit QAPI type {qapi_type}")


#: QAPI's notion of JSON types: 1.0 is a number but never an integer.
_TYPE_CHECKER = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
    {"integer": _is_integer, "number": _is_number}
)
QAPIValidator = jsonschema.validators.extend(
    jsonschema.Draft202012Validator, validators={"x-qapi-type": _qapi_type}, type_checker=_TYPE_CHECKER
)

JSONSchema = Mapping[str, Any]


@dataclass(frozen=True)
class CommandSpec:
    """One command, as its schema document declares it."""

    name: str
    uri: str
    document: JSONSchema
    returns: JSONSchema | None
    allow_oob: bool
    allow_preconfig: bool
    features: tuple[str, ...]
    #: Arguments the handler receives, in declaration order.
    members: tuple[str, ...]
    #: True when the command takes any further properties (device_add's driver properties).
    open_arguments: bool
    validator: Any = field(repr=False, compare=False)
    #: QAPI's ``gen``: False for commands that take their arguments unchecked (device_add, as QEMU).
    gen: bool = True
    #: Whether an empty argument object is valid (lets dispatch skip validation).
    empty_is_valid: bool = True


@dataclass(frozen=True)
class EventSpec:
    """One event and the shape of its ``data``."""

    name: str
    uri: str
    document: JSONSchema
    members: tuple[str, ...]
    validator: Any = field(repr=False, compare=False)


def default_schema_dir() -> Path:
    """``schema/`` from the installed package, or from the source tree."""
    packaged = resources.files("qmpd").joinpath("schema")
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "schema"


class Schema:
    """All commands, events and types, with validators and a ``$ref`` resolver."""

    def __init__(self, documents: Mapping[str, JSONSchema]) -> None:
        resources_ = [
            (uri, referencing.Resource.from_contents(doc, default_specification=referencing.jsonschema.DRAFT202012))
            for uri, doc in documents.items()
        ]
        #: Every document by its ``$id``.
        self.documents = dict(documents)
        self.registry: referencing.Registry[Any] = referencing.Registry().with_resources(resources_)
        self.commands: dict[str, CommandSpec] = {}
        self.events: dict[str, EventSpec] = {}
        for uri in sorted(documents):
            doc = documents[uri]
            relative = uri[len(SCHEMA_BASE) :]
            if relative.startswith("commands/"):
                spec = self._command(uri, doc)
                self.commands[spec.name] = spec
            elif relative.startswith("events/"):
                event = self._event(uri, doc)
                self.events[event.name] = event

    @classmethod
    def load(cls, directory: Path | None = None) -> Schema:
        """Read every ``*.json`` under ``directory`` (default: the packaged schema)."""
        root = directory or default_schema_dir()
        documents: dict[str, JSONSchema] = {}
        for path in sorted(root.rglob("*.json")):
            doc = json.loads(path.read_text(encoding="utf-8"))
            expected = SCHEMA_BASE + path.relative_to(root).as_posix()
            if doc.get("$id") != expected:
                raise ValueError(f"{path}: $id must be {expected!r}")
            documents[expected] = doc
        return cls(documents)

    def validator_for(self, schema: JSONSchema, uri: str) -> Any:
        """A validator for ``schema`` whose relative ``$ref``s resolve against ``uri``."""
        if "$id" not in schema:
            schema = {**schema, "$id": uri}
        return QAPIValidator(schema, registry=self.registry)

    def _command(self, uri: str, doc: JSONSchema) -> CommandSpec:
        meta = doc.get("x-qmp", {})
        validator = self.validator_for(doc, uri)
        open_arguments = doc.get("additionalProperties", False) is not False or self._open_branch(doc, uri)
        return CommandSpec(
            name=doc["title"],
            uri=uri,
            document=doc,
            returns=doc.get("$defs", {}).get("returns"),
            allow_oob=bool(meta.get("allow-oob", False)),
            allow_preconfig=bool(meta.get("allow-preconfig", False)),
            features=tuple(meta.get("features", ())),
            members=tuple(doc.get("properties", {})) if open_arguments else self._members(doc, uri),
            open_arguments=open_arguments,
            validator=validator,
            empty_is_valid=validator.is_valid({}),
            gen=bool(meta.get("gen", True)),
        )

    def _members(self, doc: JSONSchema, uri: str) -> tuple[str, ...]:
        """The base members, then every union branch's own members (a handler takes them all, unless a branch
        is open: then it takes the base members and ``**kwargs``)."""
        names = dict.fromkeys(doc.get("properties", {}))
        for branch in doc.get("x-qapi-union", {}).get("variants", {}).values():
            target, _ = self.resolve(branch, uri)
            names.update(dict.fromkeys(target.get("properties", {})))
        return tuple(names)

    def _open_branch(self, doc: JSONSchema, uri: str) -> bool:
        """Whether a union branch takes any further members (object-add of a CPU type: its properties)."""
        for branch in doc.get("x-qapi-union", {}).get("variants", {}).values():
            target, _ = self.resolve(branch, uri)
            if target.get("additionalProperties", False) is not False:
                return True
        return False

    def _event(self, uri: str, doc: JSONSchema) -> EventSpec:
        return EventSpec(
            name=doc["title"],
            uri=uri,
            document=doc,
            members=tuple(doc.get("properties", {})),
            validator=self.validator_for(doc, uri),
        )

    def resolve(self, schema: JSONSchema, base_uri: str) -> tuple[JSONSchema, str]:
        """Follow ``$ref`` chains; return the target schema and its document URI."""
        while "$ref" in schema:
            target = urljoin(base_uri, schema["$ref"])
            base_uri, _, pointer = target.partition("#")
            schema = self.documents[base_uri]
            for part in filter(None, pointer.split("/")):
                schema = schema[part.replace("~1", "/").replace("~0", "~")]
        return schema, base_uri

    def named_types(self) -> Iterator[tuple[str, JSONSchema]]:
        """Every document under ``types/``."""
        for uri, doc in self.documents.items():
            if uri.startswith(SCHEMA_BASE + "types/"):
                yield uri, doc
