"""
Broadcast deliveries per second: one process, one process through Redis,
and two worker processes through Redis.

    python bench/broadcast_workers.py [--subscribers 200] [--messages 1000]

The load generator is this script (Python asyncio with the websockets
client, in a process of its own); it opens the subscribers over the pubsub
route, then one publisher sends 64-byte messages as fast as the server takes
them, and it measures the time until every subscriber has every message.
Loopback only, bounded in count and time.
"""

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import websockets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.redis_process import RedisServer  # noqa: E402 - the repository's helpers
from tests.twistd_process import TWISTD, free_port, wait_port  # noqa: E402


def start_wsmux(*args):
    port = free_port()
    process = subprocess.Popen(
        [TWISTD, "-n", "--pidfile=", "wsmux", "--port", f"tcp:{port}:interface=127.0.0.1",
         "--route", "/ps=pubsub", "--log-level", "warn", "--max-send-queue", "67108864", *args],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_port(port)
    time.sleep(1.5)  # workers and Redis subscriptions come up
    return process, port


async def run(port, subscribers, messages):
    url = f"ws://127.0.0.1:{port}/ps"
    subs = []
    for _ in range(subscribers):
        ws = await websockets.connect(url, max_queue=None)
        await ws.send(json.dumps({"action": "subscribe", "channel": "bench"}))
        assert json.loads(await ws.recv())["ok"] == "subscribe"
        subs.append(ws)
    publisher = await websockets.connect(url, max_queue=None)
    payload = "x" * 40  # 64 bytes on the wire with the JSON envelope

    async def drain(ws):
        got = 0
        while got < messages:
            message = await asyncio.wait_for(ws.recv(), 60)
            if '"data"' in message:
                got += 1

    async def publish():
        for _ in range(messages):
            await publisher.send(
                json.dumps({"action": "publish", "channel": "bench", "data": payload})
            )

    async def swallow():
        try:
            while True:
                await publisher.recv()
        except websockets.ConnectionClosed:
            pass

    started = time.perf_counter()
    swallower = asyncio.ensure_future(swallow())
    await asyncio.gather(publish(), *(drain(ws) for ws in subs))
    elapsed = time.perf_counter() - started
    swallower.cancel()
    for ws in subs + [publisher]:
        await ws.close()
    return subscribers * messages / elapsed


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    if not shutil.which("redis-server"):
        sys.exit("redis-server is needed: .ci/system-deps installs it")
    redis = RedisServer(free_port())
    url = redis.url
    setups = [
        ("1 process", ()),
        ("1 process, Redis", ("--redis", url)),
        ("2 workers, Redis", ("--workers", "2", "--redis", url)),
    ]
    print(f"{options.subscribers} subscribers, {options.messages} messages each run, "
          f"median of {options.repeat}; {os.cpu_count()} cores")  # fmt: skip
    try:
        for name, args in setups:
            process, port = start_wsmux(*args)
            try:
                rates = sorted(
                    asyncio.run(run(port, options.subscribers, options.messages))
                    for _ in range(options.repeat)
                )
            finally:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=30)
            print(f"{name:20s} {rates[len(rates) // 2]:12,.0f} deliveries/s")
    finally:
        redis.stop()


if __name__ == "__main__":
    main()
