"""``query-qmp-schema``: the schema documents as QEMU's SchemaInfo list.

Commands and events come first, then every type they use, each named by an
opaque number in order of first use (as QEMU masks type names), with the
builtins (``str``, ``int``, ``bool``, ``number``, ``any``, ``null``) under
their own names.  Objects without members share one entity (QEMU's
``q_empty``).  The result is computed once per schema.
"""

from __future__ import annotations

from typing import Any

from qmpd.qapi.schema import JSONSchema, Schema
from qmpd.qobject.writer import Encoded, encode_value

_BUILTIN_JSON_TYPES = {
    "str": "string",
    "int": "int",
    "bool": "boolean",
    "number": "number",
    "any": "value",
    "null": "null",
}
_SCALARS = {"string": "str", "integer": "int", "boolean": "bool", "number": "number", "null": "null"}


class _Builder:
    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.names: dict[object, str] = {}
        self.types: list[dict[str, Any]] = []
        self.builtins: set[str] = set()
        self.counter = 0

    def _number(self) -> str:
        name = str(self.counter)
        self.counter += 1
        return name

    def _builtin(self, name: str) -> str:
        if name not in self.builtins:
            self.builtins.add(name)
            self.types.append({"name": name, "meta-type": "builtin", "json-type": _BUILTIN_JSON_TYPES[name]})
        return name

    def type_name(self, spec: JSONSchema, uri: str, key: object = None) -> str:
        """The SchemaInfo name of ``spec``, defining its entity on first use.

        Named types are keyed by their document; anonymous ones by identity
        (the documents live as long as the schema) unless ``key`` is given.
        """
        named = "$ref" in spec
        spec, uri = self.schema.resolve(spec, uri)
        if key is None:
            key = (uri, spec.get("title")) if named else id(spec)
        if "oneOf" in spec:
            return self._defined(key, lambda name: self._alternate(name, spec, uri))
        kind = spec.get("type")
        if kind is None:
            return self._builtin("any")
        if kind == "array":
            element = self.type_name(spec.get("items", {}), uri)
            array_name = f"[{element}]"
            return self._defined(
                ("array", array_name),
                lambda name: {"name": name, "meta-type": "array", "element-type": element},
                array_name,
            )
        if kind == "object":
            if not spec.get("properties"):
                return self._defined("q_empty", lambda name: {"name": name, "meta-type": "object", "members": []})
            return self._defined(key, lambda name: self._object(name, spec, uri))
        if kind == "string" and "enum" in spec:
            values = list(spec["enum"])
            features = spec.get("x-enum-features", {})
            return self._defined(
                key,
                lambda name: {
                    "name": name,
                    "meta-type": "enum",
                    "members": [{"name": v, **({"features": features[v]} if v in features else {})} for v in values],
                    "values": values,
                },
            )
        return self._builtin(_SCALARS[kind])

    def _defined(self, key: object, build: Any, fixed_name: str | None = None) -> str:
        name = self.names.get(key)
        if name is None:
            name = fixed_name or self._number()
            self.names[key] = name
            slot = len(self.types)
            self.types.append({})
            self.types[slot] = build(name)
        return name

    def _object(self, name: str, spec: JSONSchema, uri: str) -> dict[str, Any]:
        required = set(spec.get("required", ()))
        members = []
        for member, member_spec in spec.get("properties", {}).items():
            entry: dict[str, Any] = {"name": member, "type": self.type_name(member_spec, uri)}
            if member not in required:
                entry["default"] = None
            features = member_spec.get("x-features")
            if features:
                entry["features"] = list(features)
            members.append(entry)
        entity: dict[str, Any] = {"name": name, "meta-type": "object", "members": members}
        union = spec.get("x-qapi-union")
        if union:
            entity["tag"] = union["tag"]
            entity["variants"] = [
                {"case": case, "type": self._variant_type(variant, uri)} for case, variant in union["variants"].items()
            ]
        return entity

    def _variant_type(self, spec: JSONSchema, uri: str) -> str:
        return self.type_name(spec, uri)

    def _alternate(self, name: str, spec: JSONSchema, uri: str) -> dict[str, Any]:
        return {
            "name": name,
            "meta-type": "alternate",
            "members": [{"type": self.type_name(b, uri)} for b in spec["oneOf"]],
        }

    def build(self) -> list[dict[str, Any]]:
        entities: list[dict[str, Any]] = []
        for spec in self.schema.commands.values():
            entity: dict[str, Any] = {
                "name": spec.name,
                "meta-type": "command",
                "arg-type": self.type_name(_arguments_only(spec.document), spec.uri, ("arguments", spec.uri)),
                "ret-type": self.type_name({"type": "object"} if spec.returns is None else spec.returns, spec.uri),
            }
            if spec.allow_oob:
                entity["allow-oob"] = True
            if spec.features:
                entity["features"] = list(spec.features)
            entities.append(entity)
        for event in self.schema.events.values():
            entry: dict[str, Any] = {
                "name": event.name,
                "meta-type": "event",
                "arg-type": self.type_name(_arguments_only(event.document), event.uri, ("data", event.uri)),
            }
            features = event.document.get("x-qmp", {}).get("features")
            if features:
                entry["features"] = list(features)
            entities.append(entry)
        return entities + self.types


def _arguments_only(document: JSONSchema) -> JSONSchema:
    """A command or event document viewed as a plain object type (no $id, no $defs)."""
    return {
        key: value
        for key, value in document.items()
        if key in ("type", "properties", "required", "additionalProperties", "x-qapi-union")
    }


def introspect(schema: Schema) -> list[dict[str, Any]]:
    """SchemaInfo list for ``schema`` (computed once)."""
    if schema.introspection is None:
        schema.introspection = _Builder(schema).build()
    return schema.introspection


def introspection_reply(schema: Schema) -> Encoded:
    """query-qmp-schema's answer as QEMU writes it (encoded once, or precomputed in the schema bundle:
    a reply of ~90 KB costs ~5 ms to order and encode)."""
    if schema.introspection_text is None:
        schema.introspection_text = encode_value(introspect(schema))
    return Encoded(schema.introspection_text)
