"""
wsmux's own route protocol (the echo handler, its direct handshake, its
connection bookkeeping) reached from a bare Twisted protocol: no
C{twisted.web} channel, request, site or resource traversal.  What wsmux
would cost per handshake if nothing of C{twisted.web} ran for an upgrade,
for docs/benchmarks.rst ("Handshakes: what each layer costs").

    python bench/experiments/wsmux_without_web.py PORT
    bench/loadgen handshakes PORT --server-pid PID

It reads each head from the connection's first read and checks nothing
that wsmux's channel would (caps, deadline, routing): loopback only, not a
server to use.
"""

from __future__ import annotations

import sys

from twisted.internet import endpoints, protocol, reactor
from twisted.web.http_headers import Headers

from wsmux import EchoHandler, Route, RouteTree
from wsmux._takeover import upgrade
from wsmux._upgrades import DirectUpgrade
from wsmux.factory import ProtocolOptions
from wsmux.limits import ServerLimits
from wsmux.logs import filter_log_level

filter_log_level("warn")  # as the bench's --log-level warn
TREE = RouteTree(
    [Route("/echo", (EchoHandler,))],
    defaults=ProtocolOptions(ping_interval=0),
    reactor=reactor,
    limits=ServerLimits(max_connections=0, max_connections_per_ip=0),
)
ENDPOINT = TREE.route_for("/echo")
HANDLER = ENDPOINT.protocol_class(EchoHandler)


class Bare(protocol.Protocol):
    rest = b""

    def dataReceived(self, data: bytes) -> None:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            self.transport.loseConnection()
            return
        lines = data[:end].split(b"\r\n")
        target = lines[0].split(b" ")[1]
        raw: dict[bytes, list[bytes]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            raw.setdefault(name, []).append(value.strip(b" \t"))
        self.rest = data[end + 4 :]
        request = DirectUpgrade(self, target, target, Headers(raw), data[: end + 4])
        address = self.transport.getPeer().host
        place, _ = TREE.registry.hold(address, ENDPOINT, 0)
        upgrade(request, ENDPOINT.factory, HANDLER, {}, None, TREE.registry, address, place)

    def take_upgrade_rest(self) -> bytes:
        return self.rest

    def isSecure(self) -> bool:
        return False


def main(argv: list[str]) -> None:
    description = f"tcp:{argv[0]}:interface=127.0.0.1:backlog=1024"
    endpoints.serverFromString(reactor, description).listen(protocol.Factory.forProtocol(Bare))
    reactor.run()  # type: ignore[attr-defined]


if __name__ == "__main__":
    main(sys.argv[1:])
