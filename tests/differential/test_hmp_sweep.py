"""Sweep: every HMP command qmpd implements answers as QEMU 7.2's, with good and bad arguments.

The commands come from qmpd's own ``help`` and ``info`` listings, their parameters from the same help lines
(``x /fmt addr``, ``qom-get path property``); each parameter placeholder has a few values, good and bad
(``VALUES``), and each command runs with its first values, with each other value in turn, bare, and with
extra words.  Both servers (pc and q35, the same argv) get the same lines in the same order, so state a
command leaves (``cpu``, the ``x`` format) is the same on both; commands that change the run state come
last.  Outputs are compared after masking only what must differ (a thread id, the version's package
string).  Listings of what exists (``help``, ``info``, ``device_add help``, ``qom-list``, ``info
qom-tree``) must list a subset of QEMU's lines in QEMU's order; QEMU has more.  The only exceptions are
the ``hmp:`` keys of README's deliberate-differences table: ``hmp:NAME`` for a command QEMU lacks,
``hmp:LINE`` (a pattern) for one command line's output.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from tests.differential.deliberate import deliberate
from tests.differential.sweep import Pair, started_pair
from tests.helpers import RawClient

pytestmark = pytest.mark.qemu

#: Values for each parameter placeholder of the help lines, the first a good one. A placeholder with
#: no entry fails the sweep: a new command needs its values here.
VALUES: dict[str, list[str]] = {
    "index": ["0", "1", "99", "-1", "4294967296", "x"],
    "[cmd]": ["info", "", "nosuch", "cont", "info status", "help"],
    "[subcommand]": ["status", "", "nosuch"],
    "driver[,prop=value][,...]": [
        "Haswell-x86_64-cpu,socket-id=0,core-id=0,thread-id=0",
        "nosuch",
        "Haswell-x86_64-cpu",
        "Haswell-x86_64-cpu,id=x,nosuch=1",
        "help",
        "isa-debugcon,help",
        "Haswell-x86_64-cpu,help",
        "nosuch,help",
        "'Haswell-x86_64-cpu'",
        "id=bad/id",
    ],
    "device": ["nosuch", ""],
    "addr": ["0", "0x1000", "nosuch", "0x100000000000", "$pc", "$esp + 4", "$nosuch", "(1"],
    "size": ["16", "0", "x", "-1"],
    "file": ["hmp-sweep.bin", "/nonexistent/dir/file"],
    "path": ["/machine", "/nosuch", "/machine/unattached/device[0]", "machine", "/machine/peripheral"],
    "property": ["type", "nosuch", "realized"],
    "value": ["1", "x", "true", '"str"'],
    "[-j]": ["", "-j"],
    "/fmt": ["/1x", "", "/3db", "/2xg", "/4uh", "/2ow", "/1c", "/z", "/0x", "/2s", "/4i"],
    "[path]": ["", "/machine/unattached", "/nosuch", "/machine/peripheral"],
    "[-a|vcpu]": ["", "-a", "0", "9"],
    # getfd/closefd: QEMU's help repeats the command's name before its one parameter
    "getfd": ["fd1", "", "a b"],
    "closefd": ["fd1", "nosuch", ""],
    "name": [""],
    "keys": ["a", "ctrl-alt-delete", "nosuch", "0x1e", "shift-a<b", "a-b-c-d-e-f-g-h-i-j"],
    "[hold_ms]": ["", "10", "x", "-1"],
}
#: Commands that change the run state: swept last, in this order; ``quit`` only by its help line.
LAST = ("stop", "cont", "system_reset", "system_powerdown")
_THREAD_ID = re.compile(r"thread_id=\d+")


@pytest.fixture(scope="module", params=["pc", "q35"])
def pair(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    machine: str = request.param
    with started_pair(machine, tmp_path_factory.mktemp(f"hmp-{machine}")) as both:
        yield both


def run(pair: Pair, line: str) -> tuple[str, str]:
    """QEMU's and qmpd's output for one command line, masked."""
    outputs = []
    for client in (pair.qemu, pair.qmpd):
        reply = client.execute("human-monitor-command", {"command-line": line})
        text: str = reply["return"] if "return" in reply else repr(reply)
        package = client.execute("query-version")["return"]["package"]
        outputs.append(_THREAD_ID.sub("thread_id=N", text).replace(package, "PACKAGE"))
    return outputs[0], outputs[1]


def help_entries(text: str) -> dict[str, tuple[str, list[str]]]:
    """A ``help`` or ``info`` listing: name -> (its help text, its parameter placeholders)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    name = ""
    for line in text.splitlines():
        if line.startswith("\t") and name:
            entries[name] = (entries[name][0] + "\n" + line, entries[name][1])
            continue
        head = line.partition(" -- ")[0].split()
        if not head:
            continue
        if head[0] == "info" and len(head) > 1 and not head[1].startswith("["):
            head = [f"info {head[1]}", *head[2:]]
        name = head[0].split("|")[0]
        entries[name] = (line, head[1:])
    return entries


def in_qemu_order(qemu: str, qmpd: str, excused: Callable[[str], bool] = lambda _: False) -> bool:
    """Whether every line of qmpd's listing (blank lines aside) is one of QEMU's, in QEMU's order."""
    positions = {line: index for index, line in enumerate(qemu.splitlines()) if line}
    order = [positions.get(line, -1) for line in qmpd.splitlines() if line and not excused(line)]
    return -1 not in order and order == sorted(order)


def _tree_paths(text: str) -> Iterator[tuple[str, str]]:
    """``info qom-tree`` lines with the full path each names (two spaces of indent per level)."""
    stack: list[str] = []
    for line in text.splitlines():
        name = line.strip().partition(" (")[0]
        depth = (len(line) - len(line.lstrip())) // 2
        stack[depth:] = [name]
        yield line, "".join(stack)


def listing_matches(pair: Pair, line: str, qemu: str, qmpd: str) -> bool | None:
    """For a command line that lists what exists (QEMU has more), whether qmpd's listing is QEMU's;
    None for other command lines."""
    words = line.split()
    if words in (["help"], ["help", "info"], ["info"]):
        return in_qemu_order(qemu, qmpd, lambda text: bool(deliberate("hmp", text.split()[0].split("|")[0])))
    if words in (["device_add", "help"], ["device_add", "?"]):
        return in_qemu_order(qemu, qmpd, lambda text: bool(deliberate("model", _model(text))))
    if words[:2] == ["info", "qom-tree"]:
        root = words[2] if len(words) > 2 else "/machine"
        excused = {text for text, path in _tree_paths(qmpd) if deliberate("path", root.rpartition("/")[0] + path)}
        return in_qemu_order(qemu, qmpd, excused.__contains__)
    if words[:1] == ["qom-list"] and len(words) == 2:
        # What the object has is the QOM sweep's to compare; here: each server prints its own qom-list as QEMU does.
        return all(text == _qom_list_text(client, words[1]) for client, text in ((pair.qemu, qemu), (pair.qmpd, qmpd)))
    return None


def _model(text: str) -> str:
    return text.removeprefix('name "').removesuffix('"').removesuffix("-x86_64-cpu")


def _qom_list_text(client: RawClient, path: str) -> str:
    """HMP qom-list's rendering of QMP qom-list (its error, or one ``name (type)`` line per property)."""
    reply = client.execute("qom-list", {"path": path})
    if "error" in reply:
        return "Error: " + reply["error"]["desc"] + "\r\n"
    return "".join(f"{entry['name']} ({entry['type']})\r\n" for entry in reply["return"])


def lines_for(name: str, params: list[str]) -> list[str]:
    """The command lines to sweep for one command, in order, each once."""
    for param in params:
        assert param in VALUES, f"no values for {name}'s parameter {param!r}: add some to VALUES"
    base = [VALUES[param][0] for param in params]
    lines = [name, *(f"{name} {' '.join(filter(None, [*base, 'extra', 'words']))}",)]
    for position, param in enumerate(params):
        for value in VALUES[param]:
            words = [*base[:position], value, *base[position + 1 :]]
            lines.append(" ".join(filter(None, [name, *words])))
    return list(dict.fromkeys(lines))


def test_listings_are_qemus(pair: Pair) -> None:
    # Before the sweep, which ends with system_powerdown: qmpd's firmware then powers the machine off.
    for line in ("help", "info", "help info", "device_add help", "info qom-tree", "qom-list /machine"):
        qemu, qmpd = run(pair, line)
        assert listing_matches(pair, line, qemu, qmpd), line
        assert len(qmpd.splitlines()) > 5, line


def test_every_hmp_command(pair: Pair) -> None:
    qemu_help, qmpd_help = run(pair, "help")
    qemu_info, qmpd_info = run(pair, "info")
    theirs = {**help_entries(qemu_help), **help_entries(qemu_info)}
    ours = {**help_entries(qmpd_help), **help_entries(qmpd_info)}
    ours.pop("info")
    names = [name for name in ours if name not in LAST] + [name for name in LAST if name in ours]
    bugs: list[str] = []
    excused: list[str] = []
    cases = 0
    for name in names:
        if name not in theirs:
            (excused if deliberate("hmp", name) else bugs).append(f"{name}: not in QEMU 7.2")
            continue
        if ours[name][0] != theirs[name][0]:
            bugs.append(f"help {name}: qmpd {ours[name][0]!r}, QEMU {theirs[name][0]!r}")
        if name == "quit":
            continue
        lines = lines_for(name, ours[name][1])
        # The run-state changers' bare form last: after system_powerdown qmpd's firmware powers off.
        for line in reversed(lines) if name in LAST else lines:
            cases += 1
            qemu, qmpd = run(pair, line)
            listing = listing_matches(pair, line, qemu, qmpd)
            if listing or (listing is None and qmpd == qemu):
                continue
            found = f"{line!r}:\n    QEMU {qemu[:300]!r}\n    qmpd {qmpd[:300]!r}"
            (excused if deliberate("hmp", line) else bugs).append(found)
    print(f"\nHMP sweep ({pair.machine}): {len(names)} commands, {cases} command lines; {len(excused)} deliberate")
    for found in excused:
        print("  deliberate:", found.splitlines()[0])
    assert not bugs, "\n".join(bugs)
