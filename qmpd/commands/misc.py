"""Small queries about the emulator, and the migration commands that may run out-of-band."""

from __future__ import annotations

from typing import Any

from qmpd.commands.base import CommandContext, qmp_command
from qmpd.errors import DeviceNotActive, GenericError


@qmp_command("query-name")
def query_name(ctx: CommandContext) -> dict[str, Any]:
    name = ctx.machine.config.name
    return {} if name is None else {"name": name}


@qmp_command("query-uuid")
def query_uuid(ctx: CommandContext) -> dict[str, Any]:
    digits = ctx.machine.config.uuid.hex()  # all zeros without -uuid, as QEMU
    return {"UUID": f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"}


@qmp_command("query-current-machine")
def query_current_machine(ctx: CommandContext) -> dict[str, Any]:
    return {"wakeup-suspend-support": ctx.machine.machine_type.can_wake_from_suspend(ctx.machine.config.acpi)}


@qmp_command("query-balloon")
def query_balloon(ctx: CommandContext) -> dict[str, Any]:
    raise DeviceNotActive("No balloon device has been activated")


@qmp_command("balloon")
def balloon(ctx: CommandContext, value: int) -> None:
    raise DeviceNotActive("No balloon device has been activated")


@qmp_command("query-target")
def query_target(ctx: CommandContext) -> dict[str, Any]:
    return {"arch": "x86_64"}


@qmp_command("query-kvm")
def query_kvm(ctx: CommandContext) -> dict[str, Any]:
    # qmpd runs every guest on its own TCG-like engine; KVM is neither used nor offered.
    return {"enabled": False, "present": False}


@qmp_command("x-exit-preconfig")
def x_exit_preconfig(ctx: CommandContext) -> None:
    raise GenericError("The command is permitted only before machine initialization")


@qmp_command("migrate-pause")
def migrate_pause(ctx: CommandContext) -> None:
    raise GenericError("migrate-pause is currently only supported during postcopy-active state")


@qmp_command("migrate-recover")
def migrate_recover(ctx: CommandContext, uri: str) -> None:
    raise GenericError("Migrate recover can only be run when postcopy is paused.")
