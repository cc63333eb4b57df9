"""The command and event definitions in ``schema/``, loaded once.

``schema/`` is the single source of truth: one JSON Schema (2020-12) document
per command (its root validates the arguments, ``$defs.returns`` describes
the return value, ``x-qmp`` carries QAPI's flags), one per event (its root
describes ``data``), and one per named type.  Validation, dispatch,
``query-commands`` and ``query-qmp-schema`` are all derived from these
documents; schema/README.md describes the conventions.
"""

# Annotations are not postponed here: its records are made at every start (tests/unit/test_startup_imports.py).

import functools
import json
import marshal
import os
import posixpath
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from qmpd.inttypes import INT_RANGES as RANGES

if TYPE_CHECKING:
    from pathlib import Path

    import referencing

JSONSchema = Mapping[str, Any]

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
        import jsonschema

        yield jsonschema.ValidationError(f"{instance} does not fit QAPI type {qapi_type}")


@functools.cache
def qapi_validator_class() -> Any:
    """Draft 2020-12 with QAPI's notion of JSON types (1.0 is a number but never an integer) and
    the ``x-qapi-type`` keyword.  Made on first use: jsonschema and its referencing stack are a
    third of a start-up's imports, and a probe or a plain start may never validate anything."""
    import jsonschema

    type_checker = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"integer": _is_integer, "number": _is_number}
    )
    return jsonschema.validators.extend(
        jsonschema.Draft202012Validator, validators={"x-qapi-type": _qapi_type}, type_checker=type_checker
    )


#: Keywords that say nothing about validity.
_ANNOTATIONS = frozenset(
    {"$schema", "$id", "title", "description", "x-qmp", "x-examples", "x-features", "x-enum-features", "$defs"}
)
#: The keywords a command's root may use for ``empty_is_valid`` to be read off its ``required`` list
#: (every document in schema/ today; tests/unit/test_schema.py checks the answer).
_PLAIN_OBJECT_KEYWORDS = _ANNOTATIONS | {"type", "properties", "additionalProperties", "required"}
#: The JSON types the argument walker (qmpd.qapi.arguments) checks exactly as jsonschema does.
_PLAIN_TYPES = frozenset({"object", "array", "string", "integer", "number", "boolean", "null"})


def _plain_node(schema: "Schema", node: JSONSchema, uri: str, seen: set[str]) -> bool:
    """Whether every constraint under ``node`` is one the argument walker applies exactly."""
    keys = set(node) - _ANNOTATIONS
    if "$ref" in node:
        if keys != {"$ref"}:
            return False  # in 2020-12 a $ref's siblings apply too; the walker follows the $ref alone
        target, target_uri = schema.resolve(node, uri)
        key = f"{target_uri}#{id(target)}"
        if key in seen:
            return True
        seen.add(key)
        return _plain_node(schema, target, target_uri, seen)
    if not keys:
        return True  # any value
    kind = node.get("type")
    if not isinstance(kind, str) or kind not in _PLAIN_TYPES:
        return False
    if kind == "object":
        properties = node.get("properties", {})
        if not keys <= {"type", "properties", "required", "additionalProperties"}:
            return False
        if not isinstance(node.get("additionalProperties"), bool):
            return False  # absent, jsonschema allows extra members; the walker would refuse them
        if not set(node.get("required", ())) <= set(properties):
            return False
        return all(_plain_node(schema, member, uri, seen) for member in properties.values())
    if kind == "array":
        return keys <= {"type", "items"} and _plain_node(schema, node.get("items", {}), uri, seen)
    if kind == "integer":
        return keys == {"type", "x-qapi-type"} and node["x-qapi-type"] in INT_RANGES
    if kind == "string":
        return keys <= {"type", "enum"} and all(isinstance(value, str) for value in node.get("enum", ()))
    return keys == {"type"}


class LazyValidator:
    """A document's validator, compiled when first asked (most commands never are in a process)."""

    __slots__ = ("_document", "_schema", "_uri", "_validator")

    def __init__(self, schema: "Schema", document: JSONSchema, uri: str) -> None:
        self._schema = schema
        self._document = document
        self._uri = uri
        self._validator: Any = None

    @property
    def compiled(self) -> Any:
        """The jsonschema validator itself."""
        if self._validator is None:
            self._validator = self._schema.validator_for(self._document, self._uri)
        return self._validator

    def is_valid(self, instance: Any) -> bool:
        """Whether ``instance`` matches the document."""
        return bool(self.compiled.is_valid(instance))

    def iter_errors(self, instance: Any) -> Iterator[Any]:
        """jsonschema's errors for ``instance`` (none when it matches)."""
        return iter(self.compiled.iter_errors(instance))


class CommandSpec:
    """One command, as its schema document declares it."""

    __slots__ = (
        "allow_oob",
        "allow_preconfig",
        "document",
        "empty_is_valid",
        "features",
        "gen",
        "members",
        "name",
        "open_arguments",
        "plain",
        "returns",
        "uri",
        "validator",
    )

    def __init__(
        self,
        name: str,
        uri: str,
        document: JSONSchema,
        returns: JSONSchema | None,
        allow_oob: bool,
        allow_preconfig: bool,
        features: tuple[str, ...],
        members: tuple[str, ...],
        open_arguments: bool,
        validator: LazyValidator,
        gen: bool = True,
        empty_is_valid: bool = True,
        plain: bool = False,
    ) -> None:
        self.name = name
        self.uri = uri
        self.document = document
        self.returns = returns
        self.allow_oob = allow_oob
        self.allow_preconfig = allow_preconfig
        self.features = features
        #: Arguments the handler receives, in declaration order.
        self.members = members
        #: True when the command takes any further properties (device_add's driver properties).
        self.open_arguments = open_arguments
        self.validator = validator
        #: QAPI's ``gen``: False for commands that take their arguments unchecked (device_add, as QEMU).
        self.gen = gen
        #: Whether an empty argument object is valid (lets dispatch skip validation).
        self.empty_is_valid = empty_is_valid
        #: Whether the arguments use only constraints that qmpd.qapi.arguments' walker checks exactly as
        #: jsonschema does (types, members, enums, integer ranges, $ref): its verdict then needs no validator.
        self.plain = plain


class EventSpec:
    """One event and the shape of its ``data``."""

    __slots__ = ("document", "members", "name", "plain", "uri", "validator")

    def __init__(
        self,
        name: str,
        uri: str,
        document: JSONSchema,
        members: tuple[str, ...],
        validator: LazyValidator,
        plain: bool = False,
    ) -> None:
        self.name = name
        self.uri = uri
        self.document = document
        self.members = members
        self.validator = validator
        #: As CommandSpec.plain: the argument walker checks ``data`` exactly, without the validator.
        self.plain = plain


_Source = TypeVar("_Source")
_Value = TypeVar("_Value")


class LazyValues(Mapping[str, _Value]):
    """A mapping whose values are made from their sources with their first lookup: a start looks up
    a few commands and events of 91 (making all their specs took ~1.3 ms) and reads a few of the
    bundle's 199 documents (loading all took ~1.7 ms)."""

    __slots__ = ("_made", "_make", "_sources")

    def __init__(self, sources: dict[str, _Source], make: Callable[[_Source], _Value]) -> None:
        #: Each key's source (for the commands and events, in the order of their documents' $ids).
        self._sources = sources
        self._make = make
        self._made: dict[str, _Value] = {}

    def __getitem__(self, key: str) -> _Value:
        value = self._made.get(key)
        if value is None:
            value = self._made[key] = self._make(self._sources[key])
        return value

    def __contains__(self, key: object) -> bool:
        return key in self._sources

    def __iter__(self) -> Iterator[str]:
        return iter(self._sources)

    def __len__(self) -> int:
        return len(self._sources)


def _schema_root() -> str:
    """``schema/`` from the installed package (the wheel puts it in qmpd/schema), or from the source tree."""
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    packaged = os.path.join(package, "schema")
    return packaged if os.path.isdir(packaged) else os.path.join(os.path.dirname(package), "schema")


def default_schema_dir() -> "Path":
    """``schema/`` from the installed package, or from the source tree."""
    from pathlib import Path  # with urllib.parse and ipaddress, more than a start needs

    return Path(_schema_root())


#: ``python -m qmpd.qapi.bundle`` (make's install and bench steps) writes every document of
#: schema/ and the introspection derived from them here, with the size and mtime of each file.
BUNDLE = os.path.join(os.path.dirname(os.path.realpath(__file__)), "schema-bundle.marshal")


def _json_files(root: str) -> list[tuple[str, os.DirEntry[str]]]:
    """Every ``*.json`` below ``root`` as (path relative to it, with /; its entry), in path order."""
    found: list[tuple[str, os.DirEntry[str]]] = []
    pending = [("", root)]
    while pending:
        prefix, directory = pending.pop()
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_dir():
                    pending.append((f"{prefix}{entry.name}/", entry.path))
                elif entry.name.endswith(".json"):
                    found.append((prefix + entry.name, entry))
    return sorted(found, key=lambda item: item[0].split("/"))


#: The code that derives the bundle's contents from schema/ (a change to it makes a bundle stale too):
#: paths below qmpd/.
_DERIVED_BY = ("qapi/schema.py", "qapi/introspect.py", "qobject/writer.py")


def signature(files: list[tuple[str, os.DirEntry[str]]]) -> list[list[Any]]:
    """What a bundle must have been made from: each file's relative path, size and mtime, and the same
    of the modules that read and introspect them."""
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    code = [(f"qmpd/{name}", os.stat(os.path.join(package, name))) for name in _DERIVED_BY]
    return [
        [relative, stat.st_size, stat.st_mtime_ns] for relative, stat in [*code, *((r, e.stat()) for r, e in files)]
    ]


def _read_bundle(expected: list[list[Any]]) -> dict[str, Any] | None:
    """The bundle's contents if it was made from exactly these files, else None (read schema/ then)."""
    try:
        with open(BUNDLE, "rb") as stream:
            bundle = marshal.loads(stream.read())  # marshal.load(stream) reads it piece by piece
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if not isinstance(bundle, dict) or bundle.get("signature") != expected or bundle.get("python") != sys.version:
        return None
    return bundle


def join_reference(base_uri: str, ref: str) -> str:
    """``urllib.parse.urljoin(base_uri, ref)`` for the references schema/ makes (``X.json``,
    ``./X.json``, ``../types/X.json``, each maybe with ``#/pointer``, or ``#/pointer`` alone) without
    importing urllib.parse, ipaddress and their kin at every start (the load follows $refs); any
    other reference still goes through urljoin."""
    path, _, fragment = ref.partition("#")
    mark = "#" if fragment else ""  # urljoin drops an empty fragment
    base = base_uri.partition("#")[0]
    if not base.startswith(SCHEMA_BASE) or ":" in path or path.startswith("/") or "?" in ref or path.endswith("/"):
        from urllib.parse import urljoin

        return urljoin(base_uri, ref)
    if not path:
        return base + mark + fragment
    directory = base[len(SCHEMA_BASE) :].rpartition("/")[0]
    joined = posixpath.normpath(posixpath.join(directory, path))
    if joined.startswith(".."):  # above schema/: urljoin knows where that lands
        from urllib.parse import urljoin

        return urljoin(base_uri, ref)
    return SCHEMA_BASE + joined + mark + fragment


class Schema:
    """All commands, events and types, with validators and a ``$ref`` resolver."""

    def __init__(self, documents: Mapping[str, JSONSchema], titles: Mapping[str, str] | None = None) -> None:
        #: Every document by its ``$id`` (a bundle's are loaded as they are looked up).
        self.documents: Mapping[str, JSONSchema] = (
            documents if isinstance(documents, LazyValues) else dict(documents)
        )
        self._registry: referencing.Registry[Any] | None = None
        #: query-qmp-schema's answer (qmpd.qapi.introspect fills it when asked).
        self.introspection: list[dict[str, Any]] | None = None
        #: That answer as QEMU writes it, when it came precomputed in the bundle or was encoded once.
        self.introspection_text: str | None = None
        #: The packaged schema's files as ``signature`` gives them (None for another directory): what
        #: caches derived from schema/ and code (the bundle, qmpd.handler_index) are keyed by.
        self.source_signature: list[list[Any]] | None = None
        commands: dict[str, str] = {}
        events: dict[str, str] = {}
        if titles is None:  # the bundle has them apart: reading them would load every document
            titles = {uri: document["title"] for uri, document in self.documents.items() if "title" in document}
        for uri in sorted(documents):
            relative = uri[len(SCHEMA_BASE) :]
            if relative.startswith("commands/"):
                commands[titles[uri]] = uri
            elif relative.startswith("events/"):
                events[titles[uri]] = uri
        self.commands: LazyValues[CommandSpec] = LazyValues(commands, self._command)
        self.events: LazyValues[EventSpec] = LazyValues(events, self._event)

    @classmethod
    def load(cls, directory: str | os.PathLike[str] | None = None, *, bundle: bool = True) -> "Schema":
        """Read every ``*.json`` under ``directory`` (default: the packaged schema).

        For the packaged schema, the bundle stands in for the files when it was made from them as
        they are (one read instead of 163; the introspection comes precomputed).
        """
        root = _schema_root() if directory is None else os.fspath(directory)
        files = _json_files(root)
        made_from = signature(files) if directory is None else None
        if made_from is not None and bundle:
            made = _read_bundle(made_from)
            if made is not None:
                bundled: LazyValues[JSONSchema] = LazyValues(made["documents"], marshal.loads)
                schema = cls(bundled, made["titles"])
                schema.introspection_text = made["introspection_text"]
                schema.source_signature = made_from
                return schema
        documents: dict[str, JSONSchema] = {}
        for relative, entry in files:
            with open(entry.path, encoding="utf-8") as stream:
                doc = json.load(stream)
            expected = SCHEMA_BASE + relative
            if doc.get("$id") != expected:
                raise ValueError(f"{entry.path}: $id must be {expected!r}")
            documents[expected] = doc
        schema = cls(documents)
        schema.source_signature = made_from
        return schema

    @property
    def registry(self) -> "referencing.Registry[Any]":
        """Every document as a ``$ref`` target (built with the first validator)."""
        if self._registry is None:
            import referencing
            import referencing.jsonschema

            # Registered without "$schema": jsonschema picks the validator class of a $ref's target by
            # its $schema, which would check types/ documents as plain 2020-12 (1.0 an integer, no
            # x-qapi-type ranges) instead of with QAPI's rules, as the documents that refer to them are.
            draft = referencing.jsonschema.DRAFT202012
            resources = [
                (uri, draft.create_resource({key: value for key, value in doc.items() if key != "$schema"}))
                for uri, doc in self.documents.items()
            ]
            self._registry = referencing.Registry().with_resources(resources)
        return self._registry

    def validator_for(self, schema: JSONSchema, uri: str) -> Any:
        """A validator for ``schema`` whose relative ``$ref``s resolve against ``uri``."""
        if "$id" not in schema:
            schema = {**schema, "$id": uri}
        return qapi_validator_class()(schema, registry=self.registry)

    def _command(self, uri: str) -> CommandSpec:
        doc = self.documents[uri]
        meta = doc.get("x-qmp", {})
        validator = LazyValidator(self, doc, uri)
        if doc.get("type") == "object" and _PLAIN_OBJECT_KEYWORDS.issuperset(doc):
            empty_is_valid = not doc.get("required")  # {} meets every property's schema: it has none
        elif doc.get("type") == "object" and "x-qapi-union" in doc and doc.get("required"):
            empty_is_valid = False  # a union whose tag {} lacks (query-stats, object-add): no compiling at start
        else:
            empty_is_valid = validator.is_valid({})
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
            empty_is_valid=empty_is_valid,
            plain=_plain_node(self, doc, uri, set()),
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

    def _event(self, uri: str) -> EventSpec:
        doc = self.documents[uri]
        return EventSpec(
            name=doc["title"],
            uri=uri,
            document=doc,
            members=tuple(doc.get("properties", {})),
            validator=LazyValidator(self, doc, uri),
            plain=_plain_node(self, doc, uri, set()),
        )

    def resolve(self, schema: JSONSchema, base_uri: str) -> tuple[JSONSchema, str]:
        """Follow ``$ref`` chains; return the target schema and its document URI."""
        while "$ref" in schema:
            target = join_reference(base_uri, schema["$ref"])
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
