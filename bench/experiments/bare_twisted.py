"""
A bare WebSocket handshake server on Twisted: its reactor and TCP (or TLS)
transport, no HTTP request object, no WebSocket protocol object.  It answers
each upgrade with a 101 and the first frame after it (the load generator's
close) with a close, and nothing else, as bare_server.py does on epoll: the
floor a Twisted-native server stands on per handshake, for
docs/benchmarks.rst ("Handshakes: what each layer costs").

    python bench/experiments/bare_twisted.py PORT [CERT KEY]
    bench/loadgen handshakes PORT [--tls] --server-pid PID

With C{--autobahn} in place of nothing, the same port serves Autobahn's own
WebSocket server protocol (its handshake, no C{twisted.web}) closing each
connection as the client asks: what Autobahn adds to that floor.

Loopback only; not a server to use.
"""

from __future__ import annotations

import sys

from bare_server import switching  # the same head read and 101 (this directory)
from twisted.internet import endpoints, protocol, reactor


class Bare(protocol.Protocol):
    buffer = b""
    open = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if not self.open:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            response = switching(head)
            if response is None:
                self.transport.loseConnection()
                return
            self.transport.write(response)
            self.open = True
        buffer = self.buffer
        if len(buffer) >= 6 and len(buffer) >= 6 + (buffer[1] & 127):
            self.transport.write(b"\x88\x02\x03\xe8")  # the close, 1000
            self.transport.loseConnection()


def factory(autobahn: bool) -> protocol.Factory:
    if not autobahn:
        return protocol.Factory.forProtocol(Bare)
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

    made = WebSocketServerFactory()
    made.protocol = WebSocketServerProtocol
    made.setProtocolOptions(autoPingInterval=0)
    return made


def main(argv: list[str]) -> None:
    autobahn = "--autobahn" in argv
    argv = [a for a in argv if a != "--autobahn"]
    port = int(argv[0])
    if len(argv) > 2:
        description = f"ssl:{port}:interface=127.0.0.1:privateKey={argv[2]}:certKey={argv[1]}"
    else:
        description = f"tcp:{port}:interface=127.0.0.1:backlog=1024"
    endpoints.serverFromString(reactor, description).listen(factory(autobahn))
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
