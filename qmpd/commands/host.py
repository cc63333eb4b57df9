"""What libvirt asks of any emulator that is not about qmpd's machine: options, migration, TPM, SEV/SGX,
chardevs, block devices, I/O threads, statistics.

Each answer is the truthful one for qmpd: the command-line options it accepts (with QEMU 7.2's parameter
descriptions), migration capability flags it keeps but cannot use, no TPM, no block devices, no I/O
threads, no statistics providers, and QEMU's own errors for SEV and SGX without KVM.
"""

from __future__ import annotations

from typing import Any

from qmpd.cli import IGNORED_OPTIONS, option_names
from qmpd.commands.base import CommandContext, qmp_command
from qmpd.errors import GenericError
from qmpd.qapi.host_tables import OPTION_GROUPS, host_tables


def _accepted_groups() -> set[str]:
    return {OPTION_GROUPS.get(name, name) for name in (*option_names(), *IGNORED_OPTIONS)}


@qmp_command("query-command-line-options")
def query_command_line_options(ctx: CommandContext, option: str | None = None) -> list[dict[str, Any]]:
    accepted = _accepted_groups()
    options = [entry for entry in host_tables()["command_line_options"] if entry["option"] in accepted]
    if option is not None:
        options = [entry for entry in options if entry["option"] == option]
        if not options:
            raise GenericError(f"invalid option name: {option}")
    return options


@qmp_command("query-migrate-capabilities")
def query_migrate_capabilities(ctx: CommandContext) -> list[dict[str, Any]]:
    states = ctx.machine.migration_capabilities
    return [{"state": states.get(name, False), "capability": name} for name in host_tables()["migration_capabilities"]]


@qmp_command("migrate-set-capabilities")
def migrate_set_capabilities(ctx: CommandContext, capabilities: list[dict[str, Any]]) -> None:
    ctx.machine.migration_capabilities.update({entry["capability"]: entry["state"] for entry in capabilities})


@qmp_command("query-sev-capabilities")
def query_sev_capabilities(ctx: CommandContext) -> dict[str, Any]:
    raise GenericError("KVM not enabled")


@qmp_command("query-sgx-capabilities")
def query_sgx_capabilities(ctx: CommandContext) -> dict[str, Any]:
    raise GenericError("SGX is not enabled in KVM")


@qmp_command("query-tpm-models")
def query_tpm_models(ctx: CommandContext) -> list[str]:
    return []


@qmp_command("query-tpm-types")
def query_tpm_types(ctx: CommandContext) -> list[str]:
    return []


@qmp_command("query-chardev")
def query_chardev(ctx: CommandContext) -> list[dict[str, Any]]:
    return ctx.daemon.chardevs()


@qmp_command("query-iothreads")
def query_iothreads(ctx: CommandContext) -> list[dict[str, Any]]:
    return []


@qmp_command("query-block")
def query_block(ctx: CommandContext) -> list[dict[str, Any]]:
    return []


@qmp_command("query-named-block-nodes")
def query_named_block_nodes(ctx: CommandContext, flat: bool | None = None) -> list[dict[str, Any]]:
    return []


@qmp_command("query-stats-schemas")
def query_stats_schemas(ctx: CommandContext, provider: str | None = None) -> list[dict[str, Any]]:
    return []


@qmp_command("query-stats")
def query_stats(
    ctx: CommandContext, target: str, providers: list[dict[str, Any]] | None = None, vcpus: list[str] | None = None
) -> list[dict[str, Any]]:
    if vcpus is not None and target != "vcpu":
        raise GenericError("Parameter 'vcpus' is unexpected")
    return []
