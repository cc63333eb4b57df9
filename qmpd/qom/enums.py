"""QAPI enum types that QOM properties use, with the values each accepts.

Kept apart from qmpd.qom.properties so the -cpu parser, which runs before the
greeting, can check an enum value without importing dataclasses.
"""

# Annotations are not postponed here: imported before the greeting (tests/unit/test_startup_imports.py).

#: Enum type name -> accepted values (QAPI's lookup tables).
ENUM_VALUES: dict[str, tuple[str, ...]] = {
    "OnOffAuto": ("auto", "on", "off"),
    "QCryptoSecretFormat": ("raw", "base64"),
    # qmpd-guest-policy's (qmpd.machine.guest_policy), in the order the firmware numbers them.
    "QmpdGuestPlugAction": ("online", "ignore", "fail"),
    "QmpdGuestUnplugAction": ("eject", "ignore", "refuse"),
    "QmpdGuestEventAction": ("none", "panic", "triple-fault", "hang"),
}


def enum_error(type_name: str, name: str, value: object) -> str | None:
    """QEMU's text when ``value`` is not a member of enum ``type_name`` (None when it is, or no enum)."""
    members = ENUM_VALUES.get(type_name)
    if members is None or value in members:
        return None
    return f"Parameter '{name}' does not accept value '{value}'"
