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


def test_registers_in_expressions_and_qemus_32_bit_rule() -> None:
    registers = {"eax": 5, "esp": 0, "pc": 0xFFFF_FFFF_FFFF_FFF0, "cs.limit": 0xFFFF}
    assert parse_expression("$eax * 2 + $cs.limit", 0, registers)[0] == 10 + 0xFFFF
    assert parse_expression("$pc", 0, registers)[0] == -16, "a signed 64-bit value, as QEMU's int64_t"
    for text in ("$nosuch", "$", "$EAX"):
        with pytest.raises(HMPSyntaxError, match=r"^unknown register$"):
            parse_expression(text, 0, registers)
    with pytest.raises(HMPSyntaxError, match=r"^unknown register$"):
        parse_expression("$eax", 0)  # no CPU
    specs = parse_args_type("index:i")
    for text in ("-1", "4294967296", "$pc"):
        with pytest.raises(HMPSyntaxError, match=r"^'cpu' has failed: integer is for 32-bit values$"):
            parse_arguments("cpu", specs, text, registers)
    assert parse_arguments("cpu", specs, "4294967295") == {"index": 0xFFFFFFFF}
    device = parse_args_type("device:O")
    assert parse_arguments("device_add", device, "") == {}
    assert parse_arguments("device_add", device, ' "a,b" ') == {"device": "a,b"}
    with pytest.raises(HMPSyntaxError, match="extraneous characters"):
        parse_arguments("device_add", device, "a,b c")


def test_help_lines_look_like_qemu() -> None:
    assert HMP.help_text("info status") == "info status  -- show the current VM status (running|paused)\n"
    assert HMP.help_text("stop") == "stop|s  -- stop emulation\n"
    assert HMP.help_text("nosuch") == "unknown command: 'nosuch'\n"
    assert "info version  -- show the version of QEMU\n" in HMP.help_text("info")


@pytest.mark.parametrize("depth", [20_000, 100_000])
def test_deep_nesting_is_evaluated_without_recursion(depth: int) -> None:
    # QEMU 7.2 evaluates 20,000 levels (and crashes at 100,000); Python recursion stopped at 1,000.
    assert parse_expression("(" * depth + "5" + ")" * depth, 0) == (5, 2 * depth + 1)
    assert parse_expression("-" * depth + "5", 0)[0] == (-5 if depth % 2 else 5)
    assert parse_expression("~" * depth + "5", 0)[0] == (~5 if depth % 2 else 5)
    assert parse_expression("-(" * depth + "1+2" + ")" * depth + "*3", 0)[0] == (-9 if depth % 2 else 9)
    with pytest.raises(HMPSyntaxError, match=r"^'\)' expected$"):
        parse_expression("(" * depth + "5", 0)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0xffffffffffffffff/1", 0xFFFFFFFFFFFFFFFF),
        ("0xfffffffffffffff1%0x10", 1),
        ("-7/2", -3),
        ("-7%2", -1),
        ("7/-2", -3),
        ("2*-3", -6),
        ("1-2-3", -4),
        ("2+3*4&5", 14),
        ("24/4/3", 2),
    ],
)
def test_precedence_associativity_and_exact_division(text: str, value: int) -> None:
    # QEMU's grammar: & | ^ bind tighter than * / %, which bind tighter than + -; division truncates toward zero.
    assert parse_expression(text, 0)[0] == value


def test_errors_come_in_qemus_order() -> None:
    with pytest.raises(HMPSyntaxError, match=r"^division by zero$"):
        parse_expression("1/0+)", 0)
    with pytest.raises(HMPSyntaxError, match=r"^invalid char 'x' in expression$"):
        parse_expression("1/0&x", 0)
    assert parse_expression("(1+2) 3", 0) == (3, 6)
