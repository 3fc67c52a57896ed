# A .tac file that runs wsmux next to the application's own resources:
#   twistd -n -y wsmux.tac
# The route tree is mounted under /ws of the application's own Site.
import os

from twisted.application import service, strports
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from wsmux import EchoHandler, ProtocolOptions, Route, RouteTree
from wsmux.service import DrainService

port = os.environ.get("WSMUX_PORT", "8080")

tree = RouteTree(
    [Route("/echo", EchoHandler)],
    defaults=ProtocolOptions(max_message_size=64 * 1024),
)

root = Resource()
root.putChild(b"health", Data(b"ok", "text/plain"))
root.putChild(b"ws", tree)

application = service.Application("my-app")
strports.service(f"tcp:{port}:interface=127.0.0.1", Site(root)).setServiceParent(application)
# On SIGTERM, every WebSocket gets a 1001 close and up to 5 seconds to
# answer before the process exits (tree.close_all does the closing).
DrainService(tree, timeout=5).setServiceParent(application)
