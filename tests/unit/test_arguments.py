"""Argument validation: jsonschema decides, the texts are QEMU's."""

from __future__ import annotations

from typing import Any

import pytest

from qmpd.errors import GenericError
from qmpd.qapi.arguments import check_arguments
from qmpd.qapi.schema import SCHEMA_BASE, Schema

SCHEMA = Schema.load()

CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("query-status", {}, None),
    ("query-status", {"foo": 1}, "Parameter 'foo' is unexpected"),
    ("query-status", {"foo": 1, "bar": 2}, "Parameter 'bar' is unexpected"),
    ("human-monitor-command", {}, "Parameter 'command-line' is missing"),
    ("human-monitor-command", {"command-line": 1}, "Invalid parameter type for 'command-line', expected: string"),
    ("human-monitor-command", {"command-line": None}, "Invalid parameter type for 'command-line', expected: string"),
    (
        "human-monitor-command",
        {"command-line": "x", "cpu-index": "0"},
        "Invalid parameter type for 'cpu-index', expected: integer",
    ),
    (
        "human-monitor-command",
        {"command-line": "x", "cpu-index": 1.0},
        "Invalid parameter type for 'cpu-index', expected: integer",
    ),
    (
        "human-monitor-command",
        {"command-line": "x", "cpu-index": True},
        "Invalid parameter type for 'cpu-index', expected: integer",
    ),
    (
        "human-monitor-command",
        {"command-line": "x", "cpu-index": 1 << 63},
        "Invalid parameter type for 'cpu-index', expected: integer",
    ),
    (
        "human-monitor-command",
        {"cpu-index": "x", "command-line": 1},
        "Invalid parameter type for 'command-line', expected: string",
    ),
    ("human-monitor-command", {"command-line": "x", "cpu-index": 3}, None),
    ("qmp_capabilities", {"enable": ["foo"]}, "Parameter 'null' does not accept value 'foo'"),
    ("qmp_capabilities", {"enable": "oob"}, "Invalid parameter type for 'enable', expected: array"),
    ("qmp_capabilities", {"enable": ["oob", 1]}, "Invalid parameter type for 'enable[1]', expected: string"),
    ("qmp_capabilities", {"enable": ["oob", "oob"]}, None),
    ("migrate-recover", {}, "Parameter 'uri' is missing"),
    # A union: the branch the tag selects adds its members; the other branch's are unexpected (QEMU 7.2's texts).
    ("query-stats", {"target": "vcpu", "vcpus": ["/machine/unattached/device[0]"]}, None),
    ("query-stats", {"target": "vm", "vcpus": []}, "Parameter 'vcpus' is unexpected"),
    ("query-stats", {"target": "vcpu", "vcpus": [1]}, "Invalid parameter type for 'vcpus[0]', expected: string"),
    ("query-stats", {"target": "vcpu", "x": 1}, "Parameter 'x' is unexpected"),
    ("query-stats", {"vcpus": []}, "Parameter 'target' is missing"),
]


@pytest.mark.parametrize(("command", "arguments", "error"), CASES)
def test_argument_errors(command: str, arguments: dict[str, Any], error: str | None) -> None:
    spec = SCHEMA.commands[command]
    if error is None:
        check_arguments(SCHEMA, spec, arguments)
        return
    with pytest.raises(GenericError) as raised:
        check_arguments(SCHEMA, spec, arguments)
    assert raised.value.desc == error


def _schema_with(properties: dict[str, Any], required: list[str]) -> Schema:
    doc = {
        "$id": SCHEMA_BASE + "commands/x-test.json",
        "title": "x-test",
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }
    return Schema({doc["$id"]: doc})


SIZED = [
    ({"type": "integer", "x-qapi-type": "int32"}, 1 << 31, "Parameter 'v' expects int32_t"),
    ({"type": "integer", "x-qapi-type": "uint8"}, 256, "Parameter 'v' expects uint8_t"),
    ({"type": "integer", "x-qapi-type": "uint8"}, -1, "Parameter 'v' expects uint8_t"),
    ({"type": "integer", "x-qapi-type": "uint64"}, -1, None),
    ({"type": "integer", "x-qapi-type": "uint64"}, "1", "Parameter 'v' expects uint64"),
    ({"type": "integer", "x-qapi-type": "uint32"}, 1.5, "Parameter 'v' expects uint64"),
    ({"type": "number"}, 1, None),
    ({"type": "number"}, "1", "Invalid parameter type for 'v', expected: number"),
    ({"type": "boolean"}, 1, "Invalid parameter type for 'v', expected: boolean"),
    (
        {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"], "additionalProperties": False},
        {},
        "Parameter 'v.a' is missing",
    ),
    ({"type": "object", "properties": {}, "additionalProperties": False}, {"z": 1}, "Parameter 'v.z' is unexpected"),
    (
        {"type": "array", "items": {"type": "integer", "x-qapi-type": "uint8"}},
        [1, 300],
        "Parameter 'null' expects uint8_t",
    ),
    ({}, {"anything": [1, None]}, None),
]


@pytest.mark.parametrize(("prop", "value", "error"), SIZED)
def test_qapi_types(prop: dict[str, Any], value: Any, error: str | None) -> None:
    schema = _schema_with({"v": prop}, ["v"])
    spec = schema.commands["x-test"]
    if error is None:
        check_arguments(schema, spec, {"v": value})
        return
    with pytest.raises(GenericError) as raised:
        check_arguments(schema, spec, {"v": value})
    assert raised.value.desc == error


#: Values of every JSON type, at the edges of QAPI's integer types.
_POOL: list[Any] = [
    None, True, False, 0, 1, -1, 255, 256, -129, (1 << 31), (1 << 32), (1 << 63) - 1, 1 << 63, (1 << 64) - 1,
    1 << 64, -(1 << 63), -(1 << 63) - 1, 1.0, 2.5, "", "max", "static", "full", "on", [], [0], ["x"], [{}],
    {}, {"name": "max"}, {"name": 1}, {"name": "max", "props": {"x": 1}}, {"unknown": 1},
]  # fmt: skip


def _sample(spec: Any, uri: str) -> Any:
    """A value of the schema's type (valid for most)."""
    spec, uri = SCHEMA.resolve(spec, uri)
    kind = spec.get("type")
    if kind == "object":
        return {name: _sample(member, uri) for name, member in spec.get("properties", {}).items()}
    simple = {"string": (spec.get("enum") or ["x"])[0], "integer": 0, "number": 1.5, "boolean": True, "array": []}
    return simple.get(kind)


def _values(spec: Any, uri: str, depth: int = 0) -> list[Any]:
    """The pool, plus the enum values and member-wise variations of an object schema."""
    spec, uri = SCHEMA.resolve(spec, uri)
    values = list(_POOL) + list(spec.get("enum", ()))
    if spec.get("type") == "object" and depth < 2:
        base = _sample(spec, uri)
        values.append(base)
        for name, member in spec.get("properties", {}).items():
            values += [{**base, name: value} for value in _values(member, uri, depth + 1)]
            values.append({key: value for key, value in base.items() if key != name})
        values.append({**base, "surplus": 1})
    if spec.get("type") == "array" and depth < 2:
        values += [[value] for value in _values(spec.get("items", {}), uri, depth + 1)]
    return values


@pytest.mark.parametrize("name", sorted(name for name, spec in SCHEMA.commands.items() if spec.plain))
def test_the_walker_decides_plain_commands_as_jsonschema_does(name: str) -> None:
    """check_arguments trusts the walker alone for plain commands: its verdict must be jsonschema's."""
    from qmpd.qapi.arguments import first_error

    spec = SCHEMA.commands[name]
    candidates = [example["arguments"] for example in spec.document.get("x-examples", [])]
    candidates += [value for value in _values(spec.document, spec.uri) if isinstance(value, dict)]
    checked = 0
    for arguments in candidates:
        valid = spec.validator.is_valid(arguments)
        assert (first_error(SCHEMA, spec, arguments) is None) == valid, arguments
        checked += valid
    assert checked or spec.document.get("required"), "some candidate is valid"


@pytest.mark.parametrize("name", sorted(name for name, spec in SCHEMA.events.items() if spec.plain))
def test_the_walker_decides_plain_events_as_jsonschema_does(name: str) -> None:
    """EventBus checks a plain event's data with the walker alone."""
    from qmpd.qapi.arguments import first_error

    spec = SCHEMA.events[name]
    for data in [value for value in _values(spec.document, spec.uri) if isinstance(value, dict)]:
        assert (first_error(SCHEMA, spec, data) is None) == spec.validator.is_valid(data), data


def test_a_document_with_constraints_the_walker_lacks_is_not_plain() -> None:
    assert not SCHEMA.commands["migrate-set-parameters"].plain
    assert SCHEMA.commands["device-list-properties"].plain and SCHEMA.commands["query-cpu-model-expansion"].plain
