# A .tac that observes a route tree's connection events (tests/integration).
import os

from twisted.application import service, strports
from twisted.logger import Logger

from wsmux import EchoHandler, Route, RouteTree, WebSocketSite

log = Logger(namespace="events-test")
tree = RouteTree([Route("/echo", EchoHandler)])
tree.events.on("opened", lambda c: log.info("event opened conn={id}", id=c.id))
tree.events.on(
    "closed", lambda c, code, reason, clean: log.info("event closed conn={id} code={code}", id=c.id, code=code)
)
tree.events.on(
    "refused", lambda route, status, reason, peer: log.info("event refused status={s}", s=status)
)
application = service.Application("events")
port = os.environ["WSMUX_PORT"]
strports.service(f"tcp:{port}:interface=127.0.0.1", WebSocketSite(tree)).setServiceParent(application)
