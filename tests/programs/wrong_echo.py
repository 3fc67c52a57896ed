"""
A WebSocket server that answers wrongly, for the load generator's checks:
its echo at /echo changes one byte of the second message and of every 20th
after it, and its room at /rooms/bench delivers those messages with one
byte changed (the second at once: a short run publishes only a few).  Prints
"PORT <n>" once listening on 127.0.0.1.
"""

import asyncio

from websockets.asyncio.server import serve

room = set()
seen = 0


def spoiled(message):
    global seen
    seen += 1
    if seen % 20 != 2:
        return message
    data = bytearray(message.encode() if isinstance(message, str) else message)
    data[-3] ^= 0x01  # still text: a letter becomes another
    return data.decode() if isinstance(message, str) else bytes(data)


async def handler(ws):
    if ws.request.path.startswith("/rooms/"):
        room.add(ws)
        try:
            async for message in ws:
                wrong = spoiled(message)
                for member in list(room):
                    await member.send(wrong)
        finally:
            room.discard(ws)
    else:
        async for message in ws:
            await ws.send(spoiled(message))


async def main():
    async with serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
        print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
        await asyncio.Future()


asyncio.run(main())
