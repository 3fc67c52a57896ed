"""
``twistd wsmux`` with a prototype TLS layer in place of Twisted's: the
standard library's C ``ssl.SSLObject`` on memory BIOs, one call into C per
handshake step, read and write, instead of Twisted's memory-BIO transport
over pyOpenSSL.  For docs/benchmarks.rst ("What a leaner TLS layer would
buy"): measured, and not kept, as it bought nothing measurable.

    python bench/experiments/lean_tls.py -n --pidfile= wsmux \\
        --tls-port tcp:8443:interface=127.0.0.1 --cert C.pem --key K.pem ...

The default certificate only (no SNI, ALPN or shared port), no producer,
no bad-input handling: a measurement, not a server to use.
"""

from __future__ import annotations

import ssl
import sys
from typing import Any

from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.scripts.twistd import run

import wsmux.service
from wsmux._compat_twisted import write_now


class LeanTLS(ProtocolWrapper):
    context: ssl.SSLContext
    _done = False
    _closing = False

    @property
    def _tcp(self) -> Any:
        return self.transport

    def makeConnection(self, transport: Any) -> None:
        self._in, self._out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._ssl = self.context.wrap_bio(self._in, self._out, server_side=True)
        ProtocolWrapper.makeConnection(self, transport)

    def _flush(self) -> None:
        if self._out.pending:
            write_now(self.transport, (self._out.read(),), tls_now=False)

    def dataReceived(self, data: bytes) -> None:
        self._in.write(data)
        if not self._done:
            try:
                self._ssl.do_handshake()
            except ssl.SSLWantReadError:
                self._flush()
                return
            except ssl.SSLError:
                self._flush()
                self._tcp.abortConnection()
                return
            self._done = True
        got: list[bytes] = []
        while True:
            try:
                got.append(self._ssl.read(65536))
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                self._deliver(got)
                self._flush()
                self._tcp.loseConnection()
                return
            except ssl.SSLError:
                self._deliver(got)
                self._tcp.abortConnection()
                return
        self._deliver(got)
        self._flush()

    def _deliver(self, got: list[bytes]) -> None:
        if got:
            self.wrappedProtocol.dataReceived(got[0] if len(got) == 1 else b"".join(got))

    def write(self, data: bytes) -> None:
        if not self.disconnecting:
            self._ssl.write(data)
            self._flush()

    def writeSequence(self, data: Any) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if self._closing:
            return
        self._closing = True
        try:
            self._ssl.unwrap()
        except ssl.SSLError:
            pass
        self._flush()
        self.disconnecting = True
        self._tcp.loseConnection()


def lean_tls_factory(contexts: Any, wrapped: Any) -> WrappingFactory:
    default = contexts.settings.default
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(default.cert, default.key or None)
    factory = WrappingFactory(wrapped)
    factory.protocol = type("LeanTLS", (LeanTLS,), {"context": context})
    return factory


if __name__ == "__main__":
    wsmux.service.tls_factory = lean_tls_factory  # type: ignore[assignment]
    sys.argv = ["twistd", *sys.argv[1:]]
    run()
