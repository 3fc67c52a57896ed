"""
Raw Autobahn on Twisted, served through twisted.web's WebSocketResource:
echo at /echo, a room at /rooms/bench.  With BENCH_TLS_CERT and
BENCH_TLS_KEY set, over Twisted's TLS (wss) with that chain and key.
"""

import os
import sys

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.compress import PerMessageDeflateOffer, PerMessageDeflateOfferAccept
from twisted.internet import reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

port, flag = int(sys.argv[1]), sys.argv[2]
deflate = flag.startswith("deflate")
# deflate-min: the smallest settings (bench/run.py, scenario g-min).
SMALLEST = {"request_max_window_bits": 9, "no_context_takeover": True, "window_bits": 9,
            "mem_level": 1} if flag == "deflate-min" else {}  # fmt: skip


class Echo(WebSocketServerProtocol):
    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


class Room(WebSocketServerProtocol):
    members = set()

    def onOpen(self):
        self.members.add(self)

    def onMessage(self, payload, isBinary):
        prepared = self.factory.prepareMessage(payload, isBinary)
        for member in self.members:
            member.sendPreparedMessage(prepared)

    def onClose(self, wasClean, code, reason):
        self.members.discard(self)


def factory(protocol):
    f = WebSocketServerFactory()
    f.protocol = protocol
    options = {"maxMessagePayloadSize": 64 * 1024 * 1024, "maxFramePayloadSize": 64 * 1024 * 1024}
    if deflate:
        options["perMessageCompressionAccept"] = lambda offers: next(
            (
                PerMessageDeflateOfferAccept(o, **SMALLEST)
                for o in offers
                if isinstance(o, PerMessageDeflateOffer)
            ),
            None,
        )
    f.setProtocolOptions(**options)
    return f


root = Resource()
root.putChild(b"echo", WebSocketResource(factory(Echo)))
rooms = Resource()
rooms.putChild(b"bench", WebSocketResource(factory(Room)))
root.putChild(b"rooms", rooms)
if os.environ.get("BENCH_TLS_CERT"):
    from twisted.internet.ssl import PrivateCertificate

    with open(os.environ["BENCH_TLS_CERT"]) as chain, open(os.environ["BENCH_TLS_KEY"]) as key:
        certificate = PrivateCertificate.loadPEM(chain.read() + key.read())
    reactor.listenSSL(port, Site(root), certificate.options(), interface="127.0.0.1")
else:
    reactor.listenTCP(port, Site(root), interface="127.0.0.1")
reactor.run()
