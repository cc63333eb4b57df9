#!/bin/sh
# libvirt's <emulator> for qmpd: run the qmpd installed in this checkout's .venv (make run / make test
# create it).  libvirt runs this path with QEMU's arguments and a cleared environment.
here=$(cd "$(dirname "$0")/../.." && pwd)
exec "$here/.venv/bin/qmpd" "$@"
