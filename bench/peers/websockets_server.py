"""
Python websockets (asyncio, or uvloop): echo at /echo, a room at /rooms/bench.
With BENCH_TLS_CERT and BENCH_TLS_KEY set, over TLS (wss) with that
certificate chain and key.
"""

import asyncio
import os
import ssl
import sys

from websockets.asyncio.server import broadcast, serve
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

port, loop, flag = int(sys.argv[1]), sys.argv[2], sys.argv[3]
# deflate-min: the smallest settings (bench/run.py, scenario g-min).
SMALLEST = ServerPerMessageDeflateFactory(
    server_no_context_takeover=True,
    server_max_window_bits=9,
    client_max_window_bits=9,
    compress_settings={"memLevel": 1},
)
room = set()


async def handler(ws):
    if ws.request.path.startswith("/rooms/"):
        room.add(ws)
        try:
            async for message in ws:
                broadcast(room, message)
        finally:
            room.discard(ws)
    else:
        async for message in ws:
            await ws.send(message)


def tls_context():
    if not os.environ.get("BENCH_TLS_CERT"):
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.environ["BENCH_TLS_CERT"], os.environ["BENCH_TLS_KEY"])
    return context


async def main():
    async with serve(
        handler,
        "127.0.0.1",
        port,
        max_size=64 * 1024 * 1024,
        compression="deflate" if flag == "deflate" else None,
        extensions=[SMALLEST] if flag == "deflate-min" else None,
        ping_interval=None,
        ssl=tls_context(),
    ):
        await asyncio.Future()


if loop == "uvloop":
    import uvloop

    uvloop.run(main())
else:
    asyncio.run(main())
