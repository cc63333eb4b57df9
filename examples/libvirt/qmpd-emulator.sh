#!/bin/sh
# libvirt's <emulator> for qmpd: run the qmpd installed in this checkout's .venv (make run / make test
# create it).  libvirt runs this path with QEMU's arguments and a cleared environment, as the account
# qemu.conf names ("qmpd"): the checkout, the venv and the interpreter it links to must be readable by it.
here=$(cd "$(dirname "$0")/../.." && pwd)
exec "$here/.venv/bin/qmpd" "$@"
