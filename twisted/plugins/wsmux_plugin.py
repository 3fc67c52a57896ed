from twisted.application.service import ServiceMaker

wsmux = ServiceMaker(
    "wsmux",
    "wsmux._twistd",
    "A WebSocket server: many endpoints by URL path on one port.",
    "wsmux",
)
