#!/usr/bin/env python3
"""Talk to qmpd with QEMU's official client library, qemu.qmp.

Usage: qmp_client.py SOCKET_PATH
Prints the version and run state, pauses and resumes the machine, and shows
the events that came back.
"""

from __future__ import annotations

import asyncio
import sys

from qemu.qmp import EventListener, QMPClient


async def main(path: str) -> None:
    client = QMPClient("example")
    await client.connect(path)
    try:
        version = await client.execute("query-version")
        qemu = version["qemu"]
        print(f"connected: QEMU {qemu['major']}.{qemu['minor']}.{qemu['micro']} ({version['package']})")
        print("status:", (await client.execute("query-status"))["status"])
        listener = EventListener()
        with client.listen(listener):
            await client.execute("cont")
            await client.execute("stop")
            for _ in range(2):
                event = await asyncio.wait_for(listener.get(), timeout=5)
                print("event:", event["event"])
        print("status:", (await client.execute("query-status"))["status"])
        print(await client.execute("human-monitor-command", {"command-line": "info status"}), end="")
    finally:
        await client.disconnect()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
