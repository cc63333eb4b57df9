#!/bin/sh
# qmpd's REST API with curl: view the machine, grow to 2 vCPUs, shrink back to 1, pause, resume.
# Usage: examples/clients/rest.sh [BASE_URL]   (default http://127.0.0.1:8080; TOKEN=... for --http-token)
set -eu
base=${1:-http://127.0.0.1:8080}
auth=""
[ -z "${TOKEN:-}" ] || auth="Authorization: Bearer $TOKEN"
call() { curl -fsS -H "${auth:-X-No-Auth: 1}" -H 'Content-Type: application/json' "$@"; echo; }

call "$base/api/v1/machine"
call "$base/api/v1/cpus"
call -X PUT -d '{"desired_vcpus": 2}' "$base/api/v1/vm.resize"
call -X PUT -d '{"desired_vcpus": 1}' "$base/api/v1/vm.resize"
call -X PUT "$base/api/v1/vm.pause"
call -X PUT "$base/api/v1/vm.resume"
