"""``-machine`` properties: the ones qmpd's machine object has, their defaults, and QEMU's checks.

libvirt starts a domain with ``-machine pc-i440fx-7.2,usb=off,dump-guest-core=off,memory-backend=pc.ram``;
the values given here are what ``qom-get /machine`` reports afterwards.  Only properties qmpd's machine
really holds are listed (in QEMU 7.2's order, with its descriptions); any other name is refused with
QEMU's "Property ... not found".
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

from collections.abc import Iterable
from typing import Any

from qmpd.machine.types import MachineType
from qmpd.qemuopts import OptionError, parse_bool


class MachineProperty:
    """One property of ``/machine``; ``settable`` ones may be given with ``-machine``."""

    __slots__ = ("description", "level", "name", "qapi_type", "read_only", "settable")

    def __init__(
        self,
        name: str,
        qapi_type: str,
        description: str | None,
        settable: bool,
        level: str = "machine",
        read_only: bool = False,
    ) -> None:
        self.name = name
        self.qapi_type = qapi_type
        self.description = description
        self.settable = settable
        #: The class that adds it: ``machine`` (every type), ``x86`` (x86-machine), ``pc`` (generic-pc-machine) or
        #: ``board`` (the versioned pc and q35 types themselves).
        self.level = level
        #: QEMU gives it a getter only: readable with qom-get, absent from ``-machine TYPE,help``.
        self.read_only = read_only


_M = MachineProperty
#: In QEMU 7.2's order per class.  Most describe hardware or boot paths qmpd does not have (device trees,
#: SGX, CXL, NVDIMM, SMBIOS); they read as QEMU's defaults, since a client sees them as machine options.
MACHINE_PROPERTIES: tuple[MachineProperty, ...] = (
    _M("kernel", "string", "Linux kernel image file", False),
    _M("dt-compatible", "string", 'Overrides the "compatible" property of the dt root node', False),
    _M("boot", "BootConfiguration", "Boot configuration", False),
    _M("memory", "MemorySizeConfiguration", "Memory size configuration", False),
    _M("initrd", "string", "Linux initial ramdisk file", False),
    _M(
        "confidential-guest-support",
        "link<confidential-guest-support>",
        "Set confidential guest scheme to support",
        False,
    ),
    _M("graphics", "bool", "Set on/off to enable/disable graphics emulation", True),
    _M("usb", "bool", "Set on/off to enable/disable usb", True),
    _M("firmware", "string", "Firmware image", False),
    _M("memory-encryption", "string", "Set memory encryption object to use", False),
    _M("smp", "SMPConfiguration", "CPU topology", False),
    _M("dump-guest-core", "bool", "Include guest memory in a core dump", True),
    _M("phandle-start", "int", "The first phandle ID we may generate dynamically", False),
    _M("dumpdtb", "string", "Dump current dtb to a file and quit", False),
    _M("memory-backend", "link<memory-backend>", "Set RAM backendValid value is ID of hostmem based backend", False),
    _M("dtb", "string", "Linux kernel device tree file", False),
    _M("mem-merge", "bool", "Enable/disable memory merge support", True),
    _M("append", "string", "Linux kernel command line", False),
    _M("suppress-vmdesc", "bool", "Set on to disable self-describing migration", True),
    _M("smm", "OnOffAuto", "Enable SMM", False, "x86"),
    _M("acpi", "OnOffAuto", "Enable ACPI", True, "x86"),
    _M("pit", "OnOffAuto", "Enable i8254 PIT", False, "x86"),
    _M("pic", "OnOffAuto", "Enable i8259 PIC", False, "x86"),
    _M(
        "x-oem-table-id",
        "string",
        "Override the default value of field OEM Table ID in ACPI table header.The string may be up to 8 bytes in size",
        False,
        "x86",
    ),
    _M("bus-lock-ratelimit", "uint64_t", "Set the ratelimit for the bus locks acquired in VMs", False, "x86"),
    _M("sgx-epc", "SgxEPC", "SGX EPC device", False, "x86"),
    _M(
        "x-oem-id",
        "string",
        "Override the default value of field OEMID in ACPI table header.The string may be up to 6 bytes in size",
        False,
        "x86",
    ),
    _M("max-fw-size", "size", "Maximum combined firmware size", False, "pc"),
    _M("default-bus-bypass-iommu", "bool", None, False, "pc"),
    _M("device-memory-region-size", "int", None, False, "pc", read_only=True),
    _M("sata", "bool", "Enable/disable Serial ATA bus", False, "pc"),
    _M("vmport", "OnOffAuto", "Enable vmport (pc & q35)", False, "pc"),
    _M("i8042", "bool", None, False, "pc"),
    _M("hpet", "bool", "Enable/disable high precision event timer emulation", False, "pc"),
    _M("smbios-entry-point-type", "str", "SMBIOS Entry Point type [32, 64]", False, "pc"),
    _M("max-ram-below-4g", "size", "Maximum ram below the 4G boundary (32bit boundary)", False, "pc"),
    _M("smbus", "bool", "Enable/disable system management bus", False, "pc"),
    _M("hmat", "bool", "Set on/off to enable/disable ACPI Heterogeneous Memory Attribute Table (HMAT)", False, "board"),
    _M("cxl", "bool", "Set on/off to enable/disable CXL instantiation", False, "board"),
    _M("pcspk-audiodev", "str", "ID of an audiodev to use as a backend", False, "board"),
    _M("nvdimm", "bool", "Set on/off to enable/disable NVDIMM instantiation", False, "board"),
    _M("cxl-fmw", "CXLFixedMemoryWindow", "CXL Fixed Memory Windows (array)", False, "board"),
    _M("nvdimm-persistence", "string", "Set NVDIMM persistenceValid values are cpu, mem-ctrl", False, "board"),
)

#: The order QEMU lists a machine's own properties and its two containers in (one hash table on QEMU).
INSTANCE_ORDER = {
    True: ("hmat", "cxl", "peripheral", "pcspk-audiodev", "nvdimm", "peripheral-anon", "cxl-fmw", "nvdimm-persistence"),
    False: ("peripheral-anon", "peripheral"),
}

#: What the properties read when ``-machine`` does not set them (QEMU 7.2's values on a started pc or q35;
#: :func:`defaults` has those that depend on the machine type).
DEFAULTS: dict[str, Any] = {
    "usb": False,
    "dump-guest-core": True,
    "mem-merge": True,
    "suppress-vmdesc": False,
    "acpi": "auto",
    "graphics": True,
    "dt-compatible": "",
    "initrd": "",
    "confidential-guest-support": "",
    "memory-encryption": "",
    "phandle-start": 0,
    "dumpdtb": "",
    "dtb": "",
    "append": "",
    "smm": "auto",
    "pit": "auto",
    "pic": "auto",
    "x-oem-table-id": "BXPC    ",
    "bus-lock-ratelimit": 0,
    "sgx-epc": [],
    "x-oem-id": "BOCHS ",
    "max-fw-size": 8 << 20,
    "default-bus-bypass-iommu": False,
    "device-memory-region-size": 0,
    "sata": True,
    "vmport": "on",
    "i8042": True,
    "hpet": True,
    "smbios-entry-point-type": "32",
    "smbus": True,
    "hmat": False,
    "cxl": False,
    "pcspk-audiodev": "",
    "nvdimm": False,
    "cxl-fmw": [],
    "nvdimm-persistence": "",
}


def defaults(machine_type: MachineType) -> dict[str, Any]:
    """:data:`DEFAULTS` and the values that depend on the type: a PC boots from disk, CD-ROM then network
    ("cad"), its RAM is the ``pc.ram`` backend QEMU makes at start, and only 3.5 GiB of it sit below 4 GiB
    on ``pc`` (all 4 GiB on ``q35``)."""
    pc = machine_type.is_pc
    below_4g = 4 << 30 if machine_type.name.startswith("pc-q35") else 0xE0000000
    return {
        **DEFAULTS,
        "boot": {"order": "cad" if pc else ""},
        "memory-backend": f"/objects/{machine_type.default_ram_id}" if pc else "",
        "max-ram-below-4g": below_4g,
    }


def properties_of(machine_type: MachineType) -> tuple[MachineProperty, ...]:
    """The properties of one machine type's ``/machine`` object."""
    return tuple(prop for prop in MACHINE_PROPERTIES if machine_type.is_pc or prop.level == "machine")


_ON_OFF_AUTO = ("on", "off", "auto")


def parse_machine_properties(
    machine_type: MachineType, given: Iterable[tuple[str, str]], memory_backends: Iterable[str]
) -> dict[str, Any]:
    """Check ``-machine`` key=value pairs as QEMU does; return the settings they change.

    ``memory-backend=ID`` must name an ``-object memory-backend-*`` of the command line; qmpd keeps
    guest RAM in its own mapping, so the backend is checked and otherwise not used.
    """
    known = {prop.name: prop for prop in properties_of(machine_type) if prop.settable}
    backends = set(memory_backends)
    settings: dict[str, Any] = {}
    for name, value in given:
        if name == "memory-backend":
            if value not in backends:
                raise OptionError(f"Memory backend '{value}' not found")
            settings[name] = f"/objects/{value}"
            continue
        prop = known.get(name)
        if prop is None:
            raise OptionError(f"Property '{machine_type.qom_type}.{name}' not found")
        if prop.qapi_type == "bool":
            settings[name] = parse_bool(name, value)
        elif value in _ON_OFF_AUTO:
            settings[name] = value
        else:
            raise OptionError(f"Parameter '{name}' does not accept value '{value}'")
    return settings
