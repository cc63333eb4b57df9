"""schema/ is the single source of truth: documents, handlers and introspection agree."""

from __future__ import annotations

import json
import marshal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from qmpd.handlers import REGISTRY
from qmpd.qapi.introspect import introspect
from qmpd.qapi.schema import SCHEMA_BASE, Schema, default_schema_dir, join_reference
from qmpd.qobject.writer import encode, encode_value

SCHEMA = Schema.load()
DOCUMENTS = sorted(default_schema_dir().rglob("*.json"))


def test_every_handler_has_a_schema_and_every_schema_a_handler() -> None:
    assert REGISTRY.parity_problems(SCHEMA) == []


def test_parity_check_catches_a_missing_handler_and_a_wrong_parameter() -> None:
    from qmpd.commands.base import CommandRegistry

    registry = CommandRegistry()

    @registry.command("query-status")
    def wrong(ctx: object, surplus: int) -> None: ...

    problems = registry.parity_problems(SCHEMA)
    assert any("qmp_capabilities" in p and "no handler" in p for p in problems)
    assert any(p.startswith("query-status: handler parameters") for p in problems)


@pytest.mark.parametrize("path", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_documents_are_valid_json_schema_with_matching_id(path: Path) -> None:
    doc = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    assert doc["$id"] == SCHEMA_BASE + path.relative_to(default_schema_dir()).as_posix()
    assert doc.get("title"), "every document names its command, event or type"
    assert doc.get("description"), "every document says what it is for"
    if "/commands/" in doc["$id"] or "/events/" in doc["$id"]:
        assert doc["title"] == path.stem
        assert "since" in doc["x-qmp"]


def _returns_validator(name: str) -> Any:
    spec = SCHEMA.commands[name]
    return SCHEMA.validator_for(spec.returns or {"type": "object", "additionalProperties": False}, spec.uri)


@pytest.mark.parametrize("name", sorted(SCHEMA.commands))
def test_examples_in_the_schema_are_valid(name: str) -> None:
    spec = SCHEMA.commands[name]
    for example in spec.document.get("x-examples", []):
        assert spec.validator.is_valid(example["arguments"]), example
        assert _returns_validator(name).is_valid(example["returns"]), example


def test_introspection_describes_itself() -> None:
    entities = introspect(SCHEMA)
    validator = _returns_validator("query-qmp-schema")
    errors = list(validator.iter_errors(entities))
    assert errors == []


def test_introspection_shape_matches_qemu_conventions() -> None:
    entities = {entity["name"]: entity for entity in introspect(SCHEMA)}
    status = entities["query-status"]
    assert status["meta-type"] == "command"
    assert entities[status["arg-type"]] == {"name": status["arg-type"], "meta-type": "object", "members": []}
    ret = entities[status["ret-type"]]
    assert [m["name"] for m in ret["members"]] == ["running", "singlestep", "status"]
    assert entities["STOP"]["arg-type"] == status["arg-type"], "empty objects are one shared type"
    hmc = entities["human-monitor-command"]
    assert hmc["ret-type"] == "str" and entities["str"]["json-type"] == "string"
    members = entities[hmc["arg-type"]]["members"]
    assert members == [{"name": "command-line", "type": "str"}, {"name": "cpu-index", "default": None, "type": "int"}]
    assert entities["migrate-pause"]["allow-oob"] is True
    caps = entities[entities["qmp_capabilities"]["arg-type"]]["members"][0]
    assert caps["type"].startswith("[") and entities[caps["type"]]["meta-type"] == "array"
    names = [e["name"] for e in introspect(SCHEMA)]
    assert len(names) == len(set(names))
    for entity in introspect(SCHEMA):
        for key in ("arg-type", "ret-type", "element-type"):
            if key in entity:
                assert entity[key] in entities, f"{entity['name']}.{key} is dangling"


def test_every_event_is_introspected() -> None:
    entities = {entity["name"]: entity for entity in introspect(SCHEMA)}
    for name in SCHEMA.events:
        assert entities[name]["meta-type"] == "event"


def test_every_integer_names_its_qapi_type() -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "integer":
                assert node.get("x-qapi-type"), f"{where}: integer without x-qapi-type"
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    for uri, doc in SCHEMA.documents.items():
        walk(doc, uri)


def test_enum_member_features_unions_and_any_are_introspected() -> None:
    entities = {entity["name"]: entity for entity in introspect(SCHEMA)}

    def member_type(entity: dict[str, Any], name: str) -> dict[str, Any]:
        return entities[next(m["type"] for m in entity["members"] if m["name"] == name)]

    caps = entities[entities[entities["query-migrate-capabilities"]["ret-type"]]["element-type"]]
    capability = member_type(caps, "capability")
    assert {"name": "x-colo", "features": ["unstable"]} in capability["members"]
    assert {"name": "events"} in capability["members"]
    stats = entities[entities["query-stats"]["arg-type"]]
    assert stats["tag"] == "target" and [m["name"] for m in stats["members"]] == ["target", "providers"]
    assert {v["case"]: [m["name"] for m in entities[v["type"]]["members"]] for v in stats["variants"]} == {
        "vcpu": ["vcpus"],
        "vm": [],
    }
    assert entities["qom-get"]["ret-type"] == "any"
    panicked = entities[entities["GUEST_PANICKED"]["arg-type"]]
    assert [m.get("default", "required") for m in panicked["members"]] == ["required", None]
    assert member_type(panicked, "info")["tag"] == "type"


def test_object_add_takes_exactly_the_concrete_cpu_types() -> None:
    """...and qmpd-guest-policy: qmpd's own open branches, after QEMU's object types."""
    from qmpd.machine.qom_tree import type_registry

    registry = type_registry()
    cpus = [info.name for info in registry if not info.abstract and registry.is_a(info.name, "x86_64-cpu")]
    cpus.append("qmpd-guest-policy")
    document = SCHEMA.commands["object-add"].document
    variants = document["x-qapi-union"]["variants"]
    open_cases = [case for case, branch in variants.items() if branch.get("additionalProperties")]
    assert open_cases == cpus, "run tools/gen_schema_types.py object-add after changing the CPU types"
    assert document["properties"]["qom-type"]["enum"][-len(cpus) :] == cpus
    assert "memory-backend-ram" in document["properties"]["qom-type"]["enum"]


def test_empty_arguments_shortcut_agrees_with_the_validator() -> None:
    """Dispatch skips validation of ``{}`` when the spec says it is valid; read off ``required``, not compiled."""
    for name, spec in SCHEMA.commands.items():
        assert spec.empty_is_valid == spec.validator.is_valid({}), name


def test_validators_are_compiled_on_first_use_only() -> None:
    schema = Schema.load()
    spec = schema.commands["query-cpu-model-expansion"]
    assert spec.validator._validator is None
    assert not spec.validator.is_valid({"type": "static"})
    assert spec.validator.is_valid({"type": "static", "model": {"name": "max"}})
    assert spec.validator._validator is not None
    assert schema.commands["query-status"].validator._validator is None


def test_the_bundle_holds_what_schema_gives() -> None:
    """The precomputed bundle is a cache of schema/: its documents and introspection are schema/'s own."""
    from qmpd.qapi import bundle

    made = bundle.build()
    fresh = Schema.load(bundle=False)
    documents = {uri: marshal.loads(raw) for uri, raw in made["documents"].items()}
    assert documents == fresh.documents and list(documents) == list(fresh.documents)
    assert made["titles"] == {uri: doc["title"] for uri, doc in fresh.documents.items() if "title" in doc}
    built = introspect(Schema.load(bundle=False))
    assert made["introspection_text"] == encode_value(built)  # QEMU's bytes: QDict order, escapes
    assert json.loads(made["introspection_text"]) == built
    assert marshal.loads(marshal.dumps(made)) == made


def test_query_qmp_schema_is_encoded_once_as_any_reply_would_be() -> None:
    """The precomputed (or once encoded) answer is the bytes encode() writes for the built one."""
    from qmpd.qapi.introspect import introspection_reply

    fresh = Schema.load(bundle=False)
    assert fresh.introspection_text is None
    reply = introspection_reply(fresh)
    assert fresh.introspection_text == reply.text and introspection_reply(fresh).text is reply.text
    for request_id in (None, 7, "x\u00e9\ud800", [1.5, {"b": 1, "a": 2}]):
        message: dict[str, Any] = {"return": reply}
        plain: dict[str, Any] = {"return": introspect(fresh)}
        if request_id is not None:
            message["id"] = plain["id"] = request_id
        assert encode(message) == encode(plain)


def test_a_bundle_is_used_only_while_schema_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qmpd.qapi import bundle, schema

    path = tmp_path / "schema-bundle.marshal"
    monkeypatch.setattr(schema, "BUNDLE", str(path))
    bundle.write(str(path))
    loaded = Schema.load()
    assert loaded.introspection_text is not None  # came precomputed, and as written
    fresh = Schema.load(bundle=False)
    assert loaded.documents == fresh.documents and loaded.introspection_text == encode_value(introspect(fresh))
    made = marshal.loads(path.read_bytes())
    names = [entry[0] for entry in made["signature"]]
    code = ["qmpd/qapi/schema.py", "qmpd/qapi/introspect.py", "qmpd/qobject/writer.py"]
    assert names[:3] == code and len(names) == len(DOCUMENTS) + 3
    for touched in (0, 1, 2, 3, None):  # the loader, the introspection code, the encoder, a document; the interpreter
        stale = marshal.loads(path.read_bytes())
        if touched is None:
            stale["python"] += "+"
        else:
            stale["signature"][touched][2] += 1
        stale["documents"] = {}
        path.write_bytes(marshal.dumps(stale))
        loaded = Schema.load()
        assert loaded.introspection_text is None and loaded.documents == SCHEMA.documents
    for broken in (b"", b"{", b"\x00garbage", marshal.dumps([1, 2])):
        path.write_bytes(broken)
        assert Schema.load().documents == SCHEMA.documents
    path.unlink()
    assert Schema.load().introspection_text is None


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _references(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _references(value)]
    return []


def test_references_join_as_urljoin_joins_them() -> None:
    """The load's own join (no urllib.parse at start) gives urljoin's answer for every $ref of schema/,
    and for the references it hands on to urljoin."""
    from urllib.parse import urljoin

    pairs = [(uri, ref) for uri, doc in SCHEMA.documents.items() for ref in _references(doc)]
    assert len(pairs) > 100
    odd = ["#", "#/a/b", "../../x.json", "../../../x.json", "/abs.json", "https://e.org/x.json#/y", "a/./b/../c.json"]
    odd += ["x.json?q=1", "dir/", "./", "//host/x.json", "x.json#", "../types/x.json#/$defs/a~1b"]
    base = SCHEMA_BASE + "commands/device_add.json"
    pairs += [(base, ref) for ref in odd] + [(SCHEMA_BASE + "top.json", "types/x.json#/$defs/y")]
    pairs += [("https://other.org/a/b.json", "c.json")]
    for uri, ref in pairs:
        assert join_reference(uri, ref) == urljoin(uri, ref), (uri, ref)
