"""
Per-route WebSocket protocol options and the Autobahn factory built from them.

Every route gets its own L{RouteFactory}, an Autobahn
C{WebSocketServerFactory} configured from one L{ProtocolOptions} value.  The
options are defined here, once: the TOML loader, the command line and the
configuration reference in the docs all read the field list below.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from autobahn.twisted.websocket import WebSocketServerFactory
from autobahn.websocket.compress import PerMessageDeflateOfferAccept

from wsmux._deflate import accept_deflate

DeflateMode = Literal["off", "on", "inflate-only"]
DEFLATE_MODES: tuple[str, ...] = ("off", "on", "inflate-only")
SLOW_CONSUMER_POLICIES: tuple[str, ...] = ("close", "drop")

MiB = 1024 * 1024


def _option(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help}, **kw)


@dataclass(frozen=True)
class ProtocolOptions:
    """
    The protocol options of one route.

    Each field can be set globally (C{[defaults]} in the TOML file, or a
    command-line flag) and per route; per-route values inherit the global
    defaults through L{ProtocolOptions.merged}.
    """

    max_message_size: int = _option(
        MiB,
        "Largest message (after decompression) a client may send, in bytes; "
        "larger ones are closed with 1009. 0 means no limit.",
    )
    max_frame_size: int = _option(
        MiB,
        "Largest single frame payload a client may send, in bytes; larger "
        "ones are closed with 1009. 0 means no limit.",
    )
    deflate: str = _option(
        "off",
        "permessage-deflate: 'off', 'on' (accept a client's offer and "
        "compress what we send) or 'inflate-only' (accept compressed "
        "messages, never compress ours).",
    )
    deflate_threshold: int = _option(
        0,
        "Messages shorter than this many bytes go out uncompressed even where "
        "permessage-deflate is in use (Node ws uses 1024). 0 compresses every "
        "message. Streamed messages are never compressed.",
    )
    deflate_level: int = _option(
        6,
        "zlib compression level of the messages wsmux sends, 0 (stored) to 9 "
        "(smallest, slowest). 6 is zlib's default.",
    )
    deflate_mem_level: int = _option(
        8,
        "zlib memory level of wsmux's compressor, 1 to 9: each step down halves "
        "two of its four buffers (8, zlib's default, is about 128 KiB of the "
        "256 KiB a compressor takes with a 15-bit window).",
    )
    deflate_server_max_window_bits: int = _option(
        15,
        "Window of wsmux's compressor, 9 to 15 bits (2^n bytes; the compressor "
        "takes 4 bytes per window byte). A client that asks for less gets less.",
    )
    deflate_server_no_context_takeover: bool = _option(
        False,
        "Compress each message on its own and free the compressor after it "
        "(announced to the client): no compressor memory between messages, "
        "at the cost of compression across similar messages.",
    )
    deflate_client_max_window_bits: int = _option(
        0,
        "Require the client to compress with a window of at most this many bits "
        "(9 to 15), which bounds wsmux's decompressor to 2^n bytes; a client "
        "whose offer cannot take the limit gets no compression. 0 asks nothing.",
    )
    allowed_origins: tuple[str, ...] = _option(
        (),
        "Origin header values allowed to connect (shell-style patterns such "
        "as 'https://*.example.com'; 'null' allows the null origin). Empty "
        "allows any origin. A foreign origin gets 403.",
    )
    subprotocols: tuple[str, ...] = _option(
        (),
        "Subprotocols this route speaks, in order of preference. The first "
        "one the client offers is selected unless the handler's onConnect "
        "chooses one itself.",
    )
    require_subprotocol: bool = _option(
        False,
        "Reject (400) a client that offers none of the route's subprotocols.",
    )
    open_handshake_timeout: float = _option(
        10.0,
        "Seconds a client has to complete the opening handshake once the "
        "request reached the route. 0 disables.",
    )
    close_handshake_timeout: float = _option(
        5.0,
        "Seconds to wait for the peer's close frame before dropping the connection. 0 disables.",
    )
    ping_interval: float = _option(20.0, "Seconds between keepalive pings. 0 disables keepalive.")
    ping_timeout: float = _option(
        20.0,
        "Seconds to wait for the pong before the connection is dropped.",
    )
    auto_fragment_size: int = _option(
        0,
        "Split outgoing messages into frames of at most this many bytes. 0 "
        "sends every message as one frame.",
    )
    tcp_nodelay: bool = _option(True, "Disable Nagle's algorithm on the connection.")
    max_connections: int = _option(
        0,
        "Most simultaneous connections on this route; more get 503. 0 means no limit.",
    )
    require_tls: bool = _option(
        False,
        "Refuse (403) upgrades to this route that did not come over TLS.",
    )
    max_fragments: int = _option(
        1024,
        "Most frames one incoming message may be split into; more are closed "
        "with 1009. 0 means no limit.",
    )
    idle_timeout: float = _option(
        0.0,
        "Close (1000, 'idle timeout') a connection that received no message for "
        "this many seconds (pings and pongs do not count). 0 disables.",
    )
    send_delay: float = _option(
        0.0,
        "Least seconds between two messages sent to one client (pacing); "
        "messages sent sooner wait, in order. 0 disables.",
    )
    max_send_queue: int = _option(
        MiB,
        "Bytes that may wait to be sent to a client that does not read; past "
        "this the slow_consumer policy applies. 0 means no limit.",
    )
    slow_consumer: str = _option(
        "close",
        "What happens to a client past max_send_queue: 'close' it (1008) or "
        "'drop' the messages it cannot take (counted).",
    )
    channel_namespace: str = _option(
        "",
        "The channels (broadcast rooms, pubsub channels) this route's handlers "
        "reach. Empty: the route's own, which no other route can reach. Routes "
        "that name the same namespace share their channels.",
    )
    allowed_channels: tuple[str, ...] = _option(
        (),
        "Channel names the pubsub handler accepts on this route (shell-style "
        "patterns such as 'news.*'). Empty allows any name.",
    )

    def __post_init__(self) -> None:
        for name in ("allowed_origins", "subprotocols", "allowed_channels"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    def validate(self) -> None:
        """
        Check every value.

        @raise ValueError: naming the first bad field and what it must be.
        """
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            expected = _FIELD_TYPES[f.name]
            if expected is tuple:
                if not all(isinstance(v, str) for v in value):
                    raise ValueError(f"{f.name} must be a list of strings")
                continue
            ok = isinstance(value, expected) and not (
                expected in (int, float) and isinstance(value, bool)
            )
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise ValueError(f"{f.name} must be {_TYPE_WORDS[expected]}, got {value!r}")
            if expected in (int, float) and value < 0:
                raise ValueError(f"{f.name} must not be negative, got {value!r}")
        if self.slow_consumer not in SLOW_CONSUMER_POLICIES:
            raise ValueError(
                f"slow_consumer must be one of {', '.join(SLOW_CONSUMER_POLICIES)}, "
                f"got {self.slow_consumer!r}"
            )
        if self.deflate not in DEFLATE_MODES:
            raise ValueError(
                f"deflate must be one of {', '.join(DEFLATE_MODES)}, got {self.deflate!r}"
            )
        for name, low, high, extra in _DEFLATE_RANGES:
            value = getattr(self, name)
            if not (low <= value <= high or value == extra):
                also = f" (or {extra})" if extra is not None else ""
                raise ValueError(f"{name} must be {low} to {high}{also}, got {value!r}")

    def merged(self, overrides: dict[str, Any]) -> ProtocolOptions:
        """
        Return a copy with C{overrides} applied.

        @param overrides: field name to value.
        @raise ValueError: for an unknown field name or a bad value.
        """
        if not overrides:
            return self  # frozen: the same options serve as their own copy
        unknown = set(overrides) - OPTION_NAMES
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r}")
        return dataclasses.replace(self, **overrides)


# zlib's ranges: raw deflate takes 9 to 15 window bits (RFC 7692 allows 8,
# which zlib treats as 9), memory levels 1 to 9, compression levels 0 to 9.
_DEFLATE_RANGES: tuple[tuple[str, int, int, Optional[int]], ...] = (
    ("deflate_level", 0, 9, None),
    ("deflate_mem_level", 1, 9, None),
    ("deflate_server_max_window_bits", 9, 15, None),
    ("deflate_client_max_window_bits", 9, 15, 0),
)


def _field_types() -> dict[str, type]:
    # Each option's type, from the dataclass's own annotations (a tuple of
    # strings counts as tuple).
    hints = typing.get_type_hints(ProtocolOptions)
    return {
        f.name: typing.get_origin(hints[f.name]) or hints[f.name]
        for f in dataclasses.fields(ProtocolOptions)
    }


_FIELD_TYPES: dict[str, type] = _field_types()
_TYPE_WORDS = {
    int: "a whole number",
    float: "a number",
    bool: "true or false",
    str: "a string",
}
OPTION_NAMES = frozenset(_FIELD_TYPES)


def option_reference() -> list[tuple[str, str, Any, str]]:
    """
    Describe every protocol option, for the configuration reference.

    @return: C{(name, type word, default, help)} per option, in field order.
    """
    rows = []
    for f in dataclasses.fields(ProtocolOptions):
        kind = _FIELD_TYPES[f.name]
        word = "list of strings" if kind is tuple else _TYPE_WORDS[kind]
        rows.append((f.name, word, f.default, f.metadata["help"]))
    return rows


class RouteFactory(WebSocketServerFactory):
    """
    The Autobahn server factory of one route.

    @ivar options: the L{ProtocolOptions} it was configured from.
    @ivar route_path: the route's path pattern, for logs.
    """

    def __init__(
        self,
        handler: type,
        options: ProtocolOptions,
        route_path: str = "",
        reactor: Optional[Any] = None,
    ) -> None:
        # Classes from wsmux.protocol.route_protocol that carry this
        # factory's options as class attributes.
        self.route_classes: list[type] = []
        super().__init__(reactor=reactor)
        self.protocol = handler  # type: ignore[assignment]
        self.options = options
        self.route_path = route_path
        # Never advertise a version and never serve Autobahn's status page
        # (its redirect feature has a history of CVEs): wsmux answers
        # non-upgrade requests itself.
        self.server = None
        self.setProtocolOptions(
            webStatus=False,
            # RFC 6455 only; the hybi drafts' version 8 is long gone.
            versions=[13],
            # Fail a connection with a close frame that says why (1009,
            # 1007, ...) rather than by dropping TCP without a word.
            failByDrop=False,
            maxFramePayloadSize=options.max_frame_size,
            maxMessagePayloadSize=options.max_message_size,
            autoFragmentSize=options.auto_fragment_size,
            openHandshakeTimeout=options.open_handshake_timeout,
            closeHandshakeTimeout=options.close_handshake_timeout,
            tcpNoDelay=options.tcp_nodelay,
            autoPingInterval=options.ping_interval,
            autoPingTimeout=options.ping_timeout,
            maxConnections=options.max_connections,
            # wsmux works out the client address itself (see wsmux.limits).
            trustXForwardedFor=0,
            perMessageCompressionAccept=self._accept_deflate,
            # wsmux checks origins itself, to answer 403 with a reason.
            allowedOrigins=["*"],
        )

    def setProtocolOptions(self, *args: Any, **options: Any) -> None:  # type: ignore[override]
        super().setProtocolOptions(*args, **options)
        for cls in getattr(self, "route_classes", ()):
            for name in cls._wsmux_factory_options:  # type: ignore[attr-defined]
                setattr(cls, name, getattr(self, name))

    def _accept_deflate(self, offers: list[Any]) -> Optional[PerMessageDeflateOfferAccept]:
        return accept_deflate(self.options, offers)
