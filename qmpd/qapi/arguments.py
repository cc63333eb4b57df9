"""Argument validation with QEMU's error texts.

jsonschema decides *whether* arguments are valid.  When they are not, QEMU
reports the first problem its QAPI input visitor meets: members in
declaration order (depth first), then unexpected members of each object in
GHashTable order.  :func:`first_error` walks the same schema in that order to
find that problem and word it as QEMU does ("Parameter 'x' is missing",
"Invalid parameter type for 'a[0]', expected: string", ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qmpd.errors import GenericError
from qmpd.qapi.schema import INT_RANGES, CommandSpec, EventSpec, JSONSchema, Schema
from qmpd.qobject.ghash import iteration_order
from qmpd.qobject.writer import qdict_order

_INT64 = INT_RANGES["int64"]
_UINT64 = INT_RANGES["uint64"]
_JSON_TYPE_WORDS = {"string": "string", "boolean": "boolean", "number": "number", "null": "null"}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _Walker:
    """QAPI's input visitor, reduced to finding the first error."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    def value(self, spec: JSONSchema, uri: str, value: Any, name: str | None, full: str) -> str | None:
        spec, uri = self.schema.resolve(spec, uri)
        if "oneOf" in spec:
            return self.alternate(spec, uri, value, name, full)
        kind = spec.get("type")
        if kind is None:
            return None  # 'any'
        if kind == "object":
            return self.struct(spec, uri, value, full)
        if kind == "array":
            if not isinstance(value, list):
                return f"Invalid parameter type for '{full}', expected: array"
            items = spec.get("items", {})
            for index, element in enumerate(value):
                error = self.value(items, uri, element, None, f"{full}[{index}]")
                if error:
                    return error
            return None
        if kind == "integer":
            return self.integer(spec, value, name, full)
        if kind == "number":
            if isinstance(value, int | float) and not isinstance(value, bool):
                return None
            return f"Invalid parameter type for '{full}', expected: number"
        if kind == "string":
            if not isinstance(value, str):
                return f"Invalid parameter type for '{full}', expected: string"
            if "enum" in spec and value not in spec["enum"]:
                return f"Parameter '{name or 'null'}' does not accept value '{value}'"
            return None
        if kind == "boolean":
            return None if isinstance(value, bool) else f"Invalid parameter type for '{full}', expected: boolean"
        if kind == "null":
            return None if value is None else f"Invalid parameter type for '{full}', expected: null"
        return None

    def integer(self, spec: JSONSchema, value: Any, name: str | None, full: str) -> str | None:
        qapi_type = spec.get("x-qapi-type", "int")
        low, high = INT_RANGES[qapi_type]
        unsigned = qapi_type.startswith("uint") or qapi_type == "size"
        if unsigned:
            if not _is_int(value) or not _UINT64[0] <= value <= _UINT64[1]:
                return f"Parameter '{full}' expects uint64"
            if value < 0:
                value += 1 << 64  # QEMU keeps negative input for compatibility, as two's complement
        elif not _is_int(value) or not _INT64[0] <= value <= _INT64[1]:
            return f"Invalid parameter type for '{full}', expected: integer"
        if not low <= value <= high:
            return f"Parameter '{name or 'null'}' expects {qapi_type}_t"  # QEMU's visitors name the C type
        return None

    def struct(self, spec: JSONSchema, uri: str, value: Any, full: str) -> str | None:
        if not isinstance(value, dict):
            return f"Invalid parameter type for '{full or '<anonymous>'}', expected: object"
        error = self.members(spec, uri, value, full)
        if error:
            return error
        known = set(spec.get("properties", {}))
        union = spec.get("x-qapi-union")
        if union:
            # A flat union: the base members, then the members of the branch its tag selects.
            variant = union["variants"].get(value.get(union["tag"]))
            if variant is not None:
                branch, branch_uri = self.schema.resolve(variant, uri)
                error = self.members(branch, branch_uri, value, full)
                if error:
                    return error
                known |= set(branch.get("properties", {}))
                if branch.get("additionalProperties", False) is not False:
                    return None  # an open branch (object-add's CPU types) takes any further members
        if spec.get("additionalProperties", False) is False:
            extra = [key for key in iteration_order(qdict_order(list(value))) if key not in known]
            if extra:
                return f"Parameter '{_join(full, extra[0])}' is unexpected"
        return None

    def members(self, spec: JSONSchema, uri: str, value: dict[str, Any], full: str) -> str | None:
        """The first problem with the members ``spec`` declares, in declaration order."""
        required = set(spec.get("required", ()))
        properties: Mapping[str, JSONSchema] = spec.get("properties", {})
        for member, member_spec in properties.items():
            if member not in value:
                if member in required:
                    return f"Parameter '{_join(full, member)}' is missing"
                continue
            error = self.value(member_spec, uri, value[member], member, _join(full, member))
            if error:
                return error
        return None

    def alternate(self, spec: JSONSchema, uri: str, value: Any, name: str | None, full: str) -> str | None:
        for branch in spec["oneOf"]:
            if self.schema.validator_for(branch, uri).is_valid(value):
                return None
        for branch in spec["oneOf"]:
            target, target_uri = self.schema.resolve(branch, uri)
            if _matches_json_type(target, value):
                return self.value(target, target_uri, value, name, full)
        return f"Invalid parameter type for '{name or 'null'}', expected: {spec.get('title', 'value')}"


def _matches_json_type(spec: JSONSchema, value: Any) -> bool:
    """Whether ``value`` has the JSON type an alternate branch dispatches on."""
    kind = spec.get("type")
    if kind is None:
        return True
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "integer":
        return _is_int(value)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return kind == "null" and value is None


def first_error(schema: Schema, spec: CommandSpec | EventSpec, arguments: Mapping[str, Any]) -> str | None:
    """QEMU's error text for invalid ``arguments`` (or an event's data), or None if QAPI would accept them."""
    return _Walker(schema).struct(spec.document, spec.uri, dict(arguments), "")


def check_arguments(schema: Schema, spec: CommandSpec, arguments: Mapping[str, Any]) -> None:
    """Raise GenericError with QEMU's text unless ``arguments`` are valid (``gen: false`` commands check their own)."""
    if not spec.gen or (not arguments and spec.empty_is_valid):
        return
    if spec.plain:  # the walker's verdict is jsonschema's (tests/unit/test_arguments.py compares them)
        error = first_error(schema, spec, arguments)
        if error is not None:
            raise GenericError(error)
        return
    if spec.validator.is_valid(arguments):
        return
    error = first_error(schema, spec, arguments)
    if error is None:
        # The walker and jsonschema disagree: trust jsonschema, word it plainly.
        import jsonschema.exceptions

        best = jsonschema.exceptions.best_match(spec.validator.iter_errors(arguments))
        error = best.message if best is not None else "Invalid arguments"
    raise GenericError(error)
