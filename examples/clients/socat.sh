#!/bin/sh
# One request over a raw socket with socat: negotiate, ask for the run state.
# Usage: socat.sh SOCKET_PATH
printf '{"execute":"qmp_capabilities"}\n{"execute":"query-status"}\n' | socat -t 1 - "UNIX-CONNECT:${1:-qmpd.sock}"
