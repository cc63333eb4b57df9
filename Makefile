# qmpd: the two set-up commands are `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SOCKET ?= $(CURDIR)/qmpd.sock
HTTP ?= 127.0.0.1:8080

FIRMWARE := qmpd/firmware/qmpd-firmware.bin

.PHONY: run test lint typecheck bench clean firmware caches

$(VENV)/.installed: pyproject.toml hatch_build.py qmpd/vcpu/_blockhook.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(MAKE) caches
	touch $@

# The start-up caches (git-ignored; each is used only while it matches its sources, so after an edit
# they are rebuilt here rather than left to the slower fallbacks) and the bytecode.
caches:
	$(PY) -m compileall -q qmpd
	$(PY) -m qmpd.caches

run: $(VENV)/.installed caches
	@echo "qmpd: QMP socket at $(SOCKET)"
	@echo "  connect with:  $(VENV)/bin/qmp-shell $(SOCKET)"
	@echo "            or:  socat - UNIX-CONNECT:$(SOCKET)   (then type {\"execute\":\"qmp_capabilities\"})"
	@echo "  dashboard, REST, metrics and QMP over WebSocket: http://$(HTTP)/  (/api/v1/cpus, /metrics, ws://$(HTTP)/qmp)"
	@echo "  stop with Ctrl-C (or the QMP command quit); the guest firmware writes below (debugcon)"
	exec $(VENV)/bin/qmpd -machine pc -cpu Haswell -smp 2,sockets=2,cores=2,threads=2,maxcpus=8 -debugcon stdio \
		-qmp unix:$(SOCKET),server=on,wait=off --http $(HTTP)

test: $(VENV)/.installed caches
	$(PY) -m ruff check qmpd tests examples bench tools fuzz
	$(PY) -m mypy
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

# Every benchmark against qemu-system-x86_64 and raw Unicorn: bench/results/latest.md and latest.png
# (the run before is kept as previous.*).  bench/report.py --quick is a medium run, --smoke a minimal one.
bench: $(VENV)/.installed caches
	$(PY) bench/report.py

# Rebuild the bundled default firmware from its GNU as sources (needs binutils).
firmware:
	$(MAKE) -C examples/firmware OUT=$(CURDIR)/$(FIRMWARE)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache qmpd.sock
