"""x86 CPUs as QOM objects: QEMU's property set, values and rules, on a Unicorn model.

Property names, types, order and defaults come from the measured table
(qmpd.cpu.models).  Behaviour follows target/i386/cpu.c:

- feature flags (and their aliases) switch CPUID bits; static properties
  (feature flags, level, apic-id, topology ids ...) refuse changes after
  realize; family/model/stepping/vendor/model-id/tsc-frequency accept them,
  with QEMU's range texts; type, hotplugged, hotpluggable,
  unavailable-features, feature-words and filtered-features are read-only;
- at realize, ``level``/``xlevel``/``xlevel2`` left on "auto" become the model's
  level raised to the highest leaf any enabled feature needs; features the
  engine lacks are filtered (``filtered-features``, ``unavailable-features``);
- properties that concern KVM, Hyper-V or VMX capabilities are kept with
  QEMU's names, types and defaults but do not change what the guest sees.
"""

from __future__ import annotations

from collections import ChainMap
from collections.abc import Callable
from typing import Any, NamedTuple

from qmpd.cpu.models import (
    IDENTITY_RANGES,
    MODEL_ID_BYTES,
    MSR_FEATURES,
    CPUModel,
    PropertyInfo,
    c_string,
    choose_engine,
    cpu_models,
    cpu_properties,
    engine_capability,
    feature_aliases,
    feature_words,
    features,
    msr_feature_order,
    value_error,
)
from qmpd.errors import GenericError
from qmpd.qom.device import Device
from qmpd.qom.object import Object
from qmpd.qom.properties import PropertyDef
from qmpd.qom.types import TypeInfo, TypeRegistry

UNASSIGNED = 0xFFFFFFFF
#: QEMU's TCG physical address width.
TCG_PHYS_BITS = 40
#: Properties that belong to the base classes (object, device, cpu), not to x86_64-cpu.
_BASE_NAMES = {"type", "parent_bus", "realized", "hotplugged", "hotpluggable"}
_CPU_CLASS_NAMES = ("memory", "start-powered-off", "legacy-memory")
#: The level each CPUID leaf range raises (QEMU's x86_cpu_adjust_feat_level); other ranges,
#: such as the hypervisor leaves at 0x40000000 (kvm-hint-dedicated), raise none.
_LEVEL_OF_REGION = {0: "level", 0x80000000: "xlevel", 0xC0000000: "xlevel2"}
#: The phys-bits range x86_cpu_realizefn accepts for a 64-bit CPU (TARGET_PHYS_ADDR_SPACE_BITS is 52).
PHYS_BITS_RANGE = (32, 52)


#: XSAVE state components and the feature that enables each (QEMU's x86_ext_save_areas): x87, SSE, AVX,
#: MPX's two, AVX-512's three, PKRU, AMX's two.
XSAVE_COMPONENTS = (
    (0, "fpu"),
    (1, "sse"),
    (2, "avx"),
    (3, "mpx"),
    (4, "mpx"),
    (5, "avx512f"),
    (6, "avx512f"),
    (7, "avx512f"),
    (9, "pku"),
    (17, "amx-tile"),
    (18, "amx-tile"),
)
#: The feature word of the XSAVE components a guest may enable (CPUID 0xD.0 EAX, XCR0's low half).
XCR0_WORD: tuple[int, int | None, str] = (0xD, 0, "EAX")
#: Leaf 1 EDX bits an AMD CPU repeats in leaf 0x80000001 EDX (CPUID_EXT2_AMD_ALIASES).
AMD_ALIASES = 0x0183F3FF


class CPUSettings(NamedTuple):
    """Everything plugging changes on a CPU, kept so a failed plug can put it back."""

    #: The values set on the CPU (its defaults are shared and never change).
    values: dict[str, Any]
    identity: dict[str, Any]
    switched: dict[str, bool]
    plus: set[str]
    minus: set[str]
    cpu_index: int | None
    filtered: frozenset[str]
    hotplugged: bool


def _default_values(model: CPUModel) -> dict[str, Any]:
    """Defaults of a model's static and inert properties, shared by its CPUs (never written:
    a CPU's own values sit above them), so an unrealized CPU costs ~1 KiB, not ~3 KiB."""
    values = _DEFAULTS_BY_MODEL.get(model.name)
    if values is None:
        values = {p.name: p.default for p in cpu_properties() if p.has_default and p.feature is None}
        values.update({"min-level": model.level, "min-xlevel": model.xlevel, "min-xlevel2": 0})
        if model.name == "max" or model.host_cpuid:
            values["pmu"] = True  # max_x86_cpu_initfn turns it on
        _DEFAULTS_BY_MODEL[model.name] = values
    return values


_DEFAULTS_BY_MODEL: dict[str, dict[str, Any]] = {}


class X86CPU(Device):
    """One x86 vCPU's QOM face (the engine that runs it lives in qmpd.vcpu)."""

    def __init__(self, registry: TypeRegistry, type_name: str) -> None:
        super().__init__(registry, type_name)
        model = self.type_info.data["model"]
        assert isinstance(model, CPUModel)
        self.model = model
        #: Values of static and inert properties, by name: what was set, over the model's shared defaults.
        self.values: ChainMap[str, Any] = ChainMap({}, _default_values(model))
        self.identity: dict[str, Any] = {
            "family": model.family,
            "model": model.model,
            "stepping": model.stepping,
            "vendor": model.vendor,
            "model-id": model.model_id,
            "tsc-frequency": 0,
        }
        #: Feature flags switched explicitly (property or -cpu), by canonical name.
        self.switched: dict[str, bool] = {}
        #: Legacy -cpu +feat / -feat lists, applied after every other setting.
        self.plus: set[str] = set()
        self.minus: set[str] = set()
        self.start_powered_off = False
        #: The slot index (QEMU's cpu_index), set when plugged.
        self.cpu_index: int | None = None
        self.filtered: frozenset[str] = frozenset()

    # -- features ---------------------------------------------------------------------

    def requested_features(self) -> set[str]:
        """What the model and the settings ask for, before filtering."""
        wanted = set(self.model.nominal)
        for name, on in self.switched.items():
            if on:
                wanted.add(name)
            else:
                wanted.discard(name)
        return (wanted | self.plus) - self.minus

    def wants(self, name: str) -> bool:
        """Whether ``name`` is among :meth:`requested_features` (without building the set)."""
        if name in self.minus:
            return False
        if name in self.plus:
            return True
        on = self.switched.get(name)
        return name in self.model.nominal if on is None else on

    def guest_features(self) -> set[str]:
        """What the guest sees: requested features an engine can provide."""
        if self.realized:
            return self.requested_features() - self.filtered
        return self.requested_features() & engine_capability()

    def engine(self) -> CPUModel:
        """The Unicorn model that will run this CPU."""
        return choose_engine(self.model, frozenset(self.requested_features()))

    def _word_masks(self, names: set[str]) -> dict[tuple[int, int | None, str], int]:
        masks: dict[tuple[int, int | None, str], int] = {}
        table = features()
        for name in names:
            feature = table.get(name)
            if feature is not None:
                masks[feature.word] = masks.get(feature.word, 0) | 1 << feature.bit
        return masks

    def _word_list(
        self, names: set[str], extra: dict[tuple[int, int | None, str], int] | None = None
    ) -> list[dict[str, Any]]:
        masks = self._word_masks(names)
        for key, bits in (extra or {}).items():
            masks[key] = masks.get(key, 0) | bits
        words = []
        for leaf, subleaf, register in feature_words():
            word: dict[str, Any] = {"cpuid-input-eax": leaf}
            if subleaf is not None:
                word["cpuid-input-ecx"] = subleaf
            word["cpuid-register"] = register
            word["features"] = masks.get((leaf, subleaf, register), 0)
            words.append(word)
        return words

    def _xcr0(self, names: set[str]) -> int:
        """The XSAVE components ``names`` enable (x86_cpu_enable_xsave_components): none without xsave."""
        if "xsave" not in self.requested_features():
            return 0
        return sum(1 << bit for bit, feature in XSAVE_COMPONENTS if feature in names)

    def feature_words(self) -> list[dict[str, Any]]:
        """``feature-words``: the guest's CPUID feature bits, XSAVE components and, on a realized AMD CPU,
        leaf 1's EDX bits mirrored in 0x80000001 EDX, as x86_cpu_realizefn copies them."""
        guest = self.guest_features()
        extra: dict[tuple[int, int | None, str], int] = {}
        if self.realized:  # both are set by realize (x86_cpu_expand_features, x86_cpu_realizefn)
            # QEMU 7.2 does not filter this word: a component stays even when its feature is filtered.
            extra[XCR0_WORD] = self._xcr0(self.requested_features())
            if self.identity["vendor"] == "AuthenticAMD":
                leaf1 = self._word_masks(guest).get((1, None, "EDX"), 0)
                extra[(0x80000001, None, "EDX")] = leaf1 & AMD_ALIASES
        return self._word_list(guest, extra)

    def unavailable_features(self) -> list[str]:
        """Filtered features in QEMU's order (feature word, then bit).

        feature-words lists words last-first, so the word order is its reverse.
        """
        filtered = self.filtered if self.realized else self.requested_features() - engine_capability()
        order = {word: index for index, word in enumerate(reversed(feature_words()))}
        table = features()
        present = [table[name] for name in filtered if name in table]
        present.sort(key=lambda f: (order.get(f.word, len(order)), f.bit))
        return [f.name for f in present] + sorted(
            (name for name in filtered if name in MSR_FEATURES), key=msr_feature_order
        )

    def filter_warnings(self) -> list[str]:
        """QEMU's realize-time warnings for the features the engine cannot run (x86_cpu_filter_features)."""
        table = features()
        out = []
        for name in self.unavailable_features():
            if name in MSR_FEATURES:
                msr, bit = MSR_FEATURES[name]
                out.append(f"TCG doesn't support requested feature: MSR({msr:02X}H).{name} [bit {bit}]")
                continue
            feature = table[name]
            out.append(
                f"TCG doesn't support requested feature: CPUID.{feature.leaf:02X}H:{feature.register}.{name} "
                f"[bit {feature.bit}]"
            )
        return out

    # -- levels ---------------------------------------------------------------------

    def _auto_levels(self) -> dict[str, int]:
        minimum = {
            "level": self.values["min-level"],
            "xlevel": self.values["min-xlevel"],
            "xlevel2": self.values["min-xlevel2"],
            "level-func7": 0,
        }
        requested = self.requested_features()
        auto = bool(self.values.get("full-cpuid-auto-level", True))
        table = features()
        for name in requested:
            feature = table.get(name)
            if feature is None:
                continue
            is_leaf7_ebx = feature.leaf == 7 and feature.subleaf == 0 and feature.register == "EBX"
            if not auto and not is_leaf7_ebx:
                continue
            key = _LEVEL_OF_REGION.get(feature.leaf & 0xF0000000)
            if key is not None:
                minimum[key] = max(minimum[key], feature.leaf)
            if feature.leaf == 7 and feature.subleaf is not None:
                minimum["level-func7"] = max(minimum["level-func7"], feature.subleaf)
        if auto and "svm" in requested:
            minimum["xlevel"] = max(minimum["xlevel"], 0x8000000A)
        return minimum

    def level(self, name: str) -> int:
        """Effective level, xlevel, xlevel2 or level-func7 (an explicit value wins over auto)."""
        value = self.values[name]
        if value != UNASSIGNED or not self.realized:
            return int(value)
        return self._auto_levels()[name]

    # -- life cycle -------------------------------------------------------------------

    def expand(self) -> None:
        """QEMU's x86_cpu_expand_features: levels left on "auto" get their computed value."""
        automatic = self._auto_levels()
        for name in ("level", "xlevel", "xlevel2", "level-func7"):
            if self.values[name] == UNASSIGNED:
                self.values[name] = automatic[name]
        # QEMU raises the minimum levels themselves (x86_cpu_adjust_level on cpuid_min_*), and shows them.
        for name in ("level", "xlevel", "xlevel2"):
            self.values[f"min-{name}"] = automatic[name]

    def settings(self) -> CPUSettings:
        """A copy of the CPU's settings (see :meth:`restore`)."""
        return CPUSettings(
            dict(self.values.maps[0]),
            dict(self.identity),
            dict(self.switched),
            set(self.plus),
            set(self.minus),
            self.cpu_index,
            self.filtered,
            self.hotplugged,
        )

    def restore(self, saved: CPUSettings) -> None:
        """Put back settings taken before a plug that failed: the CPU is as it was."""
        self.values = ChainMap(dict(saved.values), _default_values(self.model))
        self.identity = dict(saved.identity)
        self.switched = dict(saved.switched)
        self.plus, self.minus = set(saved.plus), set(saved.minus)
        self.cpu_index, self.filtered, self.hotplugged = saved.cpu_index, saved.filtered, saved.hotplugged

    def check_realizable(self) -> None:
        """x86_cpu_realizefn's refusals, before anything changes."""
        if self.model.host_cpuid:
            raise GenericError(f"CPU model '{self.model.name}' requires KVM or HVF")
        phys_bits = self.values.get("phys-bits")
        low, high = PHYS_BITS_RANGE
        if phys_bits and "lm" in self.requested_features() and not low <= phys_bits <= high:
            raise GenericError(f"phys-bits should be between {low} and {high}  (but is {phys_bits})")

    def realize(self) -> None:
        """QEMU's x86_cpu_realizefn, as far as qmpd's engine is concerned."""
        self.check_realizable()
        self.expand()
        requested = frozenset(self.requested_features())
        self.filtered = requested - choose_engine(self.model, requested).features
        if not self.values.get("phys-bits"):
            present = requested - self.filtered
            # x86_cpu_realizefn: a 32-bit CPU addresses 36 bits with PSE-36, else 32.
            if "lm" in present:
                self.values["phys-bits"] = TCG_PHYS_BITS
            else:
                self.values["phys-bits"] = 36 if "pse36" in present else 32
        if not self.values.get("hv-vendor-id"):
            self.values["hv-vendor-id"] = "Microsoft Hv"  # x86_cpu_hyperv_realize's default
        if not self.values.get("ucode-rev"):
            self.values["ucode-rev"] = 0x01000065 if self.identity["vendor"] == "AuthenticAMD" else 0x100000000
        super().realize()

    # -- property plumbing ---------------------------------------------------------------

    def get_identity(self, name: str) -> Any:
        """family, model, stepping, vendor, model-id, tsc-frequency."""
        return self.identity[name]

    def set_identity(self, name: str, value: Any) -> None:
        """QEMU's class setters (allowed at any time) with their range checks.

        model-id keeps what fits CPUID's 48-byte brand string (whole UTF-8 characters).
        """
        refused = value_error(name, value)
        if refused is not None:
            raise GenericError(refused)
        if name == "model-id":
            value = c_string(value)[:MODEL_ID_BYTES].decode("utf-8", "ignore")
        self.identity[name] = value


def _feature_property(info: PropertyInfo) -> PropertyDef:
    canonical = feature_aliases().get(info.name, info.name)

    def get(obj: Object) -> bool:
        assert isinstance(obj, X86CPU)
        return obj.wants(canonical) and not (obj.realized and canonical in obj.filtered)

    def set_(obj: Object, value: Any) -> None:
        assert isinstance(obj, X86CPU)
        obj.switched[canonical] = bool(value)

    return PropertyDef(
        info.name,
        info.type,
        getter=get,
        setter=set_,
        static=True,
        default=info.default,
        has_default=info.has_default,
        description=info.description,
        alias_of=info.alias_of,
        instance=info.instance,
    )


#: Models whose QEMU definition carries its own cache descriptors (cache_info): for them QEMU
#: leaves ``legacy-cache`` off; every other model reports the legacy cache layout (measured, QEMU 7.2).
MODELS_WITH_CACHE_INFO = frozenset({"EPYC", "Dhyana", "EPYC-Rome"})


#: Properties with no qdev default that still read a value before anything sets them: lbr-fmt's "not set"
#: marker (every bit outside PERF_CAP_LBR_FMT) and an empty Hyper-V vendor id.
_UNSET_VALUES: dict[str, Any] = {"lbr-fmt": ~0x3F & (1 << 64) - 1, "hv-vendor-id": ""}
#: Value properties that are another name for one value (x86_cpu_initfn's object_property_add_alias).
_VALUE_ALIASES = {"lbr_fmt": "lbr-fmt"}


#: Value properties computed when read, not stored.
_READERS: dict[str, Callable[[X86CPU], Any]] = {
    "level": lambda cpu: cpu.level("level"),
    "xlevel": lambda cpu: cpu.level("xlevel"),
    "xlevel2": lambda cpu: cpu.level("xlevel2"),
    "level-func7": lambda cpu: cpu.level("level-func7"),
    "unavailable-features": lambda cpu: cpu.unavailable_features(),
    "feature-words": lambda cpu: cpu.feature_words(),
    "filtered-features": lambda cpu: cpu._word_list(set(cpu.filtered)),
    "legacy-cache": lambda cpu: cpu.values.get("legacy-cache", cpu.model.name not in MODELS_WITH_CACHE_INFO),
}


def _value_property(info: PropertyInfo) -> PropertyDef:
    name = info.name
    if name in IDENTITY_RANGES or name in ("vendor", "model-id"):

        def get_identity(obj: Object) -> Any:
            assert isinstance(obj, X86CPU)
            return obj.get_identity(name)

        def set_identity(obj: Object, value: Any) -> None:
            assert isinstance(obj, X86CPU)
            obj.set_identity(name, value)

        return PropertyDef(
            name,
            info.type,
            getter=get_identity,
            setter=set_identity,
            default=info.default,
            has_default=info.has_default,
            description=info.description,
        )

    reader = _READERS.get(name)
    stored = _VALUE_ALIASES.get(name, name)

    # Flags QEMU keeps in MSR or KVM feature words (vmx-*, kvm-*) read false until set, never null.
    unset: Any = _UNSET_VALUES.get(stored, False if info.type == "bool" else None)

    def get(obj: Object) -> Any:
        assert isinstance(obj, X86CPU)
        return reader(obj) if reader is not None else obj.values.get(stored, unset)

    def set_(obj: Object, value: Any) -> None:
        assert isinstance(obj, X86CPU)
        refused = value_error(name, value)
        if refused is not None:
            raise GenericError(refused)
        obj.values[stored] = value

    return PropertyDef(
        name,
        info.type,
        getter=None if info.get_error else get,
        setter=set_ if info.writable else None,
        static=info.static and info.writable,
        default=info.default,
        has_default=info.has_default,
        get_error=info.get_error,
        description=info.description,
        instance=info.instance,
    )


def _start_powered_off_property() -> PropertyDef:
    def get(obj: Object) -> bool:
        assert isinstance(obj, X86CPU)
        return obj.start_powered_off

    def set_(obj: Object, value: Any) -> None:
        assert isinstance(obj, X86CPU)
        obj.start_powered_off = bool(value)

    return PropertyDef("start-powered-off", "bool", getter=get, setter=set_)


def _x86_properties() -> tuple[PropertyDef, ...]:
    out = []
    for info in cpu_properties():
        if info.name in _BASE_NAMES or info.name in _CPU_CLASS_NAMES:
            continue
        is_feature = info.feature is not None or info.name in MSR_FEATURES
        out.append(_feature_property(info) if is_feature else _value_property(info))
    return tuple(out)


def _cpu_class_properties() -> tuple[PropertyDef, ...]:
    by_name = {info.name: info for info in cpu_properties()}
    legacy = by_name["legacy-memory"]
    return (
        PropertyDef("memory", "link<memory-region>"),
        _start_powered_off_property(),
        PropertyDef("legacy-memory", legacy.type, get_error=legacy.get_error),
    )


def _max_property(name: str, default: bool) -> PropertyDef:
    """A qdev property of QEMU's ``max`` class (and so of ``host``): kept and shown, changing nothing here."""

    def get(obj: Object) -> Any:
        assert isinstance(obj, X86CPU)
        return obj.values.get(name, default)

    def set_(obj: Object, value: Any) -> None:
        assert isinstance(obj, X86CPU)
        obj.values[name] = value

    return PropertyDef(name, "bool", getter=get, setter=set_, static=True, default=default, has_default=True)


#: max_x86_cpu_properties: ``migratable`` (only migratable features) and ``host-cache-info`` (the host's caches).
MAX_PROPERTIES = (_max_property("migratable", True), _max_property("host-cache-info", False))


def register_cpu_types(registry: TypeRegistry) -> None:
    """cpu, x86_64-cpu and one concrete type per model (plus its -v1 name)."""
    registry.register(TypeInfo("cpu", "device", abstract=True, properties=_cpu_class_properties()))
    registry.register(TypeInfo("x86_64-cpu", "cpu", abstract=True, properties=_x86_properties()))
    for model in cpu_models().values():
        parent = "max-x86_64-cpu" if model.host_cpuid else "x86_64-cpu"
        properties = MAX_PROPERTIES if model.name == "max" else ()
        registry.register(
            TypeInfo(model.typename, parent, factory=X86CPU, properties=properties, data={"model": model})
        )
        if model.versioned is not None:
            registry.register(
                TypeInfo(f"{model.versioned}-x86_64-cpu", "x86_64-cpu", factory=X86CPU, data={"model": model})
            )
