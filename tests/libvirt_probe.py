"""libvirt 9.0's emulator probe: the QMP requests it sends after qmp_capabilities, in its order.

One copy for the differential test (tests/differential/test_libvirt_probe_diff.py) and the probe
benchmark (bench/probe_bench.py); recorded in reference/libvirt-observed.md §2.
"""

from __future__ import annotations

from typing import Any

#: Devices whose properties libvirt asks for.
DEVICES = [
    "virtio-blk-pci", "virtio-net-pci", "virtio-scsi-pci", "virtio-net-ccw", "virtio-scsi-ccw", "vfio-pci",
    "scsi-hd", "ide-hd", "PIIX4_PM", "usb-redir", "usb-storage", "kvm-pit", "VGA", "vmware-svga", "qxl",
    "virtio-gpu-pci", "virtio-gpu-device", "ICH9-LPC", "virtio-balloon-pci", "virtio-balloon-ccw",
    "virtio-balloon-device", "intel-iommu", "mch", "nvdimm", "pcie-root-port", "usb-host",
    "vhost-user-fs-device", "virtio-mem-pci", "virtio-iommu-pci",
]  # fmt: skip
#: The host CPU model, as libvirt names it in its expansions.
HOST = {"name": "host"}
#: The requests, after qmp_capabilities.
PROBE: list[tuple[str, dict[str, Any]]] = [
    ("query-version", {}),
    ("query-target", {}),
    ("query-qmp-schema", {}),
    ("query-commands", {}),
    ("query-kvm", {}),
    ("qom-list-types", {}),
    *[("device-list-properties", {"typename": name}) for name in DEVICES],
    ("qom-list-properties", {"typename": "memory-backend-file"}),
    ("qom-list-properties", {"typename": "memory-backend-memfd"}),
    ("qom-list-properties", {"typename": "max-x86_64-cpu"}),
    ("query-machines", {}),
    ("qom-list-properties", {"typename": "none-machine"}),
    ("query-cpu-definitions", {}),
    ("query-tpm-models", {}),
    ("query-tpm-types", {}),
    ("query-command-line-options", {}),
    ("query-migrate-capabilities", {}),
    ("query-sev-capabilities", {}),
    ("query-sgx-capabilities", {}),
    ("query-cpu-model-expansion", {"type": "static", "model": HOST}),
    ("query-cpu-model-expansion", {"type": "static", "model": {**HOST, "props": {"migratable": False}}}),
    (
        "query-cpu-model-expansion",
        {"type": "full", "model": {**HOST, "props": {"migratable": False, "hv-passthrough": True}}},
    ),
]
#: What libvirt 9.0 sends beyond the probe: query-current-machine once the schema lists it (whether the
#: guest can wake from suspend, asked before a suspend), the domain start (libvirt-observed.md §3), its
#: reconnect after a libvirtd restart (tests/integration/test_libvirt.py) and the vCPU hot-plug exchange (§4).
START = [
    "qmp_capabilities", "query-migrate-capabilities", "migrate-set-capabilities", "query-chardev",
    "query-hotpluggable-cpus", "query-cpus-fast", "qom-list", "qom-get", "query-iothreads",
    "query-named-block-nodes", "query-block", "cont",
]  # fmt: skip
RECONNECT = [
    "qmp_capabilities", "query-status", "query-hotpluggable-cpus", "query-cpus-fast", "query-block",
    "query-named-block-nodes", "query-chardev", "query-jobs", "query-migrate", "qom-list",
]  # fmt: skip
HOTPLUG = ["device_add", "device_del", "query-hotpluggable-cpus", "query-cpus-fast", "qom-get"]
#: Every command name libvirt 9.0 sends to an emulator like qmpd's machines, once each.
LIBVIRT_COMMANDS = list(
    dict.fromkeys([name for name, _ in PROBE] + ["query-current-machine"] + START + RECONNECT + HOTPLUG)
)
