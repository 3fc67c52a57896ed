"""
permessage-deflate (RFC 7692) as a route configures it.

Autobahn does the compressing and the decompressing; this module decides
what a route accepts and with which parameters (L{accept_deflate}), says
so truthfully in the response (L{DeflateAccept}), and gives a route's
compressor the level Autobahn does not take, freeing it between messages
where there is no context to keep (L{tuned_deflate}).  Only public names of
Autobahn's are used: the offer and accept classes, the compressor's
documented methods and attributes, and a connection's
C{websocket_extensions_in_use}.
"""

from __future__ import annotations

import functools
import zlib
from typing import TYPE_CHECKING, Any, Optional

from autobahn.websocket.compress import (
    PerMessageDeflate,
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
)
from twisted.logger import Logger

if TYPE_CHECKING:
    from wsmux.factory import ProtocolOptions

log = Logger()

# zlib's default level (what Z_DEFAULT_COMPRESSION means).
DEFAULT_LEVEL = 6


class DeflateAccept(PerMessageDeflateOfferAccept):
    """
    An accepted offer whose response says what the server will really do.

    Autobahn's own response names C{server_no_context_takeover} only when
    the client asked for it, and echoes the client's
    C{server_max_window_bits} rather than the (smaller) window the server
    uses.  RFC 7692 lets a server announce no context takeover unasked
    (7.1.1.1) and answer a window request with a smaller value (7.1.2.1); it
    must not name a window the client did not ask about.
    """

    def get_extension_string(self) -> str:
        parts = [self.EXTENSION_NAME]
        if self.no_context_takeover:
            parts.append("server_no_context_takeover")
        if self.offer.request_max_window_bits:
            parts.append(f"server_max_window_bits={self.window_bits}")
        if self.request_no_context_takeover:
            parts.append("client_no_context_takeover")
        if self.request_max_window_bits:
            parts.append(f"client_max_window_bits={self.request_max_window_bits}")
        return "; ".join(parts)


def accept_deflate(
    options: ProtocolOptions, offers: list[Any], windows: Optional[list[Any]] = None
) -> Optional[DeflateAccept]:
    """
    Choose the first permessage-deflate offer the route can accept.

    @param options: the route's options.
    @param offers: the client's offers, parsed by Autobahn, in its order.
    @param windows: for each permessage-deflate offer, in order, what it
        said of C{client_max_window_bits} (see L{client_windows}); Autobahn's
        parsed offer keeps only whether it was there.
    @return: the accept, or C{None} to go on without compression.
    """
    if options.deflate == "off":
        return None
    client_bits = options.deflate_client_max_window_bits
    index = -1
    for offer in offers:
        if not isinstance(offer, PerMessageDeflateOffer):
            continue
        index += 1
        if client_bits and not offer.accept_max_window_bits:
            # The client cannot be held to a smaller window, and the route
            # requires one: this offer is declined (another may do).
            continue
        asked: Any = windows[index] if windows is not None and index < len(windows) else None
        request = client_bits
        if client_bits and isinstance(asked, int) and not isinstance(asked, bool):
            # A client that named its own limit is answered with the smaller
            # of the two (RFC 7692 7.1.2.2: never more than it offered).
            request = min(client_bits, asked)
        window = options.deflate_server_max_window_bits
        if offer.request_max_window_bits:
            window = min(window, offer.request_max_window_bits)
        return DeflateAccept(
            offer,
            request_max_window_bits=request,
            no_context_takeover=bool(
                options.deflate_server_no_context_takeover or offer.request_no_context_takeover
            ),
            window_bits=window,
            mem_level=options.deflate_mem_level,
            # The route's limit is the protocol's: Autobahn hands the
            # decompressor what is left of it with every frame.
            max_message_size=None,
        )
    if client_bits:
        log.debug(
            "permessage-deflate declined: no offer lets the client's window be limited "
            "to {bits} bits",
            bits=client_bits,
        )
    return None


def client_windows(header: str) -> list[Any]:
    """
    What each permessage-deflate offer in a C{Sec-WebSocket-Extensions}
    value says of C{client_max_window_bits}: C{None} (absent), C{True}
    (no value) or the number of bits.
    """
    found: list[Any] = []
    for extension in header.split(","):
        name, *params = (part.strip() for part in extension.split(";"))
        if name.lower() != PerMessageDeflateOffer.EXTENSION_NAME:
            continue
        value: Any = None
        for param in params:
            key, sep, raw = param.partition("=")
            if key.strip().lower() == "client_max_window_bits":
                raw = raw.strip().strip('"')
                value = int(raw) if sep and raw.isdigit() else True
        found.append(value)
    return found


def accept_on_connection(protocol: Any, offers: list[Any]) -> Optional[DeflateAccept]:
    """
    The accept of a route that requires a client window: with the client's
    own limit read from its request (the connection's
    C{perMessageCompressionAccept}).
    """
    header = protocol.http_headers.get("sec-websocket-extensions", "")
    return accept_deflate(protocol.factory.options, offers, client_windows(header))


class _TunedDeflate(PerMessageDeflate):
    # The server side of Autobahn's PerMessageDeflate, with a compression
    # level, and without a compressor between messages when the context is
    # not kept.  Its own compressor attribute: Autobahn's is left unused.
    level = DEFAULT_LEVEL
    _wsmux_compressor: Any = None

    def decompress_message_data(self, data: bytes, max_output_len: Optional[int] = None) -> bytes:
        # Autobahn asks zlib for at most what is left of the message limit
        # and takes a full budget with nothing left unconsumed as within it;
        # but zlib may still hold output back, which the end of the message
        # then drops: a message just over the limit arrived cut short,
        # without an error.  Asking for one byte more lets an over-long
        # message show itself, and Autobahn's own check fails it (1009).
        if max_output_len is not None:
            max_output_len += 1
        return super().decompress_message_data(data, max_output_len)  # type: ignore[no-any-return]

    def start_compress_message(self) -> None:
        if self._wsmux_compressor is None:
            compressor = self._wsmux_compressor = zlib.compressobj(
                self.level, zlib.DEFLATED, -self.server_max_window_bits, self.mem_level
            )
            # Autobahn calls this for every piece of a message: the zlib
            # method itself, without a Python call around it.
            self.compress_message_data = compressor.compress  # type: ignore[method-assign,assignment]

    def compress_message_data(self, data: bytes) -> bytes:
        return self._wsmux_compressor.compress(data)  # type: ignore[no-any-return]

    def end_compress_message(self) -> bytes:
        data: bytes = self._wsmux_compressor.flush(zlib.Z_SYNC_FLUSH)
        if self.server_no_context_takeover:
            self._wsmux_compressor = None
            del self.compress_message_data  # and the compressor with it
        # The empty stored block that ends a sync flush is left off (RFC 7692 7.2.1).
        return data[:-4]


def deflate_bound(length: int) -> int:
    """
    The most C{length} bytes can become compressed as one message, with
    any window and memory level (zlib's general C{deflateBound}, and the
    sync flush).
    """
    return length + (length >> 3) + (length >> 6) + 64


@functools.cache
def tuned_deflate(level: int) -> type:
    """
    The compressor class of routes that compress at C{level} or do not
    keep the context between messages.
    """
    return type("TunedDeflate", (_TunedDeflate,), {"level": level})


def deflate_class(options: ProtocolOptions) -> Optional[type]:
    """
    The class a route's compressors become (C{None} for a route without
    permessage-deflate).
    """
    if options.deflate == "off":
        return None
    return tuned_deflate(options.deflate_level)


def tune(protocol: Any, cls: type) -> None:
    """
    Make the compressor negotiated for C{protocol} an instance of C{cls},
    before anything is compressed (from C{onOpen}).
    """
    for extension in protocol.websocket_extensions_in_use:
        if type(extension) is PerMessageDeflate:
            extension.__class__ = cls
