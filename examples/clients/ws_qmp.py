#!/usr/bin/env python3
"""Run one QMP command over qmpd's WebSocket and print the reply (and any events before it).

examples/clients/ws_qmp.py ws://127.0.0.1:8080/qmp query-status
examples/clients/ws_qmp.py ws://127.0.0.1:8080/qmp device_del '{"id": "vcpu1"}' --token "$TOKEN"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

import aiohttp


async def run(url: str, command: str, arguments: dict[str, object], token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession(headers=headers) as client, client.ws_connect(url) as ws:
        greeting = json.loads(await ws.receive_str(timeout=10))
        print(json.dumps(greeting), file=sys.stderr)
        await ws.send_str(json.dumps({"execute": "qmp_capabilities"}))
        await ws.receive_str(timeout=10)
        request: dict[str, object] = {"execute": command, "id": "ws_qmp"}
        if arguments:
            request["arguments"] = arguments
        await ws.send_str(json.dumps(request))
        while True:
            message = json.loads(await ws.receive_str(timeout=60))
            if message.get("id") == "ws_qmp":
                message.pop("id")
                print(json.dumps(message))
                return 1 if "error" in message else 0
            print(json.dumps(message))  # an event that came first


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="ws://HOST:PORT/qmp")
    parser.add_argument("command")
    parser.add_argument("arguments", nargs="?", default="{}", help="the command's arguments as a JSON object")
    parser.add_argument("--token", help="bearer token (qmpd --http-token)")
    args = parser.parse_args()
    return asyncio.run(run(args.url, args.command, json.loads(args.arguments), args.token))


if __name__ == "__main__":
    sys.exit(main())
