"""The HMP command line parser and table."""

from __future__ import annotations

import pytest

from qmpd.hmp import commands as _commands  # noqa: F401  (fills the table)
from qmpd.hmp.monitor import HMP
from qmpd.hmp.parser import HMPSyntaxError, parse_args_type, parse_arguments, parse_expression


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("42", 42),
        ("0x10", 16),
        ("010", 8),
        ("1+2*3", 7),
        ("(1+2)*3", 9),
        ("-5", -5),
        ("~0&0xff", 255),
        ("7/2", 3),
        ("7%4", 3),
        ("1|6^2", 5),
    ],
)
def test_expressions(text: str, value: int) -> None:
    assert parse_expression(text, 0)[0] == value


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "unexpected end of expression"),
        ("x", "invalid char 'x' in expression"),
        ("(1", "')' expected"),
        ("1/0", "division by zero"),
    ],
)
def test_expression_errors(text: str, error: str) -> None:
    with pytest.raises(HMPSyntaxError) as raised:
        parse_expression(text, 0)
    assert str(raised.value) == error


def test_argument_types_and_extraneous_text() -> None:
    specs = parse_args_type("index:i,name:s?,rest:S?")
    assert parse_arguments("cmd", specs, " 3 foo bar baz ") == {"index": 3, "name": "foo", "rest": "bar baz"}
    with pytest.raises(HMPSyntaxError, match="cmd: extraneous characters at the end of line"):
        parse_arguments("cmd", parse_args_type("index:i"), "1 2")
    flags = parse_args_type("all:-a")
    assert parse_arguments("cmd", flags, "-a") == {"all": True}
    assert parse_arguments("cmd", flags, "") == {"all": False}


def test_help_lines_look_like_qemu() -> None:
    assert HMP.help_text("info status") == "info status  -- show the current VM status (running|paused)\n"
    assert HMP.help_text("stop") == "stop|s  -- stop emulation\n"
    assert HMP.help_text("nosuch") == "unknown command: 'nosuch'\n"
    assert "info version  -- show the version of QEMU\n" in HMP.help_text("info")
