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
