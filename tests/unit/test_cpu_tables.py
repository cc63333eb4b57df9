"""qmpd.cpu.tables: the derived CPU tables a start reads are what data/ gives, and a stale or missing
cache is never used."""

from __future__ import annotations

import marshal
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmpd.cpu import expansion, models, tables
from qmpd.qobject import writer

_CACHED = (
    models.cpu_properties,
    models.feature_words,
    models.expansion_lists,
    models.cpu_models,
    models.features,
    models.feature_aliases,
    models.engine_capability,
)


def _clear() -> None:
    tables.cached.cache_clear()
    for function in _CACHED:
        function.cache_clear()


def _write(path: Path) -> None:
    """Write a cache and forget what this process derived meanwhile (building it asks for the tables)."""
    tables.write(str(path))
    _clear()


@pytest.fixture
def cache_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private cache path; the process's tables are derived again afterwards."""
    path = tmp_path / "cpu-tables.marshal"
    monkeypatch.setattr(tables, "TABLES", str(path))
    _clear()
    yield path
    monkeypatch.undo()
    _clear()


def test_the_cache_holds_what_data_gives(cache_file: Path) -> None:
    _write(cache_file)
    made = tables.cached()
    assert made is not None  # a fresh cache is used
    assert models.cpu_properties() == models.derive_properties() and len(models.cpu_properties()) == 439
    assert models.feature_words() == models.derive_feature_words()
    assert models.expansion_lists() == models.derive_expansion_lists()
    assert models.cpu_models() == models.derive_models() and list(models.cpu_models()) == list(models.derive_models())
    assert expansion.cpu_definitions().text == writer.encode_value(expansion.derive_definitions())
    for name, bucket in made["buckets"].items():
        assert bucket == writer.qdict_bucket(name)
    assert set(made["buckets"]) == {info.name for info in models.derive_properties()}


def test_a_model_reads_its_engine_cpuid_from_data() -> None:
    data = models.load_table("x86_cpu_models.json")
    every = models.cpu_models()
    assert every["Haswell"].cpuid == data["Haswell"]["cpuid"]
    richest = max((m for m in every.values() if m.versioned), key=lambda m: len(m.features))
    assert every["max"].cpuid == every["host"].cpuid == richest.cpuid
    assert every["base"].cpuid == data["qemu64"]["cpuid"]


@pytest.mark.parametrize("touched", range(len(tables.DERIVED_FROM) + 1))
def test_a_stale_cache_is_not_used(cache_file: Path, touched: int) -> None:
    """An input edited since (size or mtime) or another interpreter: the tables come from data/ again."""
    _write(cache_file)
    made = marshal.loads(cache_file.read_bytes())
    if touched < len(tables.DERIVED_FROM):
        relative, size, mtime = made["signature"][2 + touched]
        made["signature"][2 + touched] = (relative, size, mtime + 1)
    else:
        made["signature"][0] += "+"
    made["models"] = ()
    cache_file.write_bytes(marshal.dumps(made))
    assert tables.cached() is None
    assert models.cpu_models() == models.derive_models() and "Haswell" in models.cpu_models()


@pytest.mark.parametrize("content", [None, b"", b"\x00garbage", marshal.dumps([1, 2]), marshal.dumps({})])
def test_a_missing_or_broken_cache_is_not_used(cache_file: Path, content: bytes | None) -> None:
    if content is not None:
        cache_file.write_bytes(content)
    assert tables.cached() is None
    assert models.cpu_properties() == models.derive_properties()
    assert expansion.cpu_definitions().text == writer.encode_value(expansion.derive_definitions())
