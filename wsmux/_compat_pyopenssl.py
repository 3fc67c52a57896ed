"""
Every use wsmux makes of pyOpenSSL's private names (see L{wsmux._compat}):
a TLS connection's records read, encrypted and read out with the OpenSSL
calls pyOpenSSL's own methods make.

Checked against pyOpenSSL 26.0.0 and 26.4.0.  Without the internal (its
check failing, or C{WSMUX_PUBLIC_PATH} set) each function here calls the
pyOpenSSL method it stands for.
"""

from __future__ import annotations

import threading
from typing import Any, Optional

from OpenSSL import SSL
from OpenSSL.SSL import WantReadError

from wsmux._compat import all_of, code_names, declare, missing_names

try:
    from OpenSSL._util import ffi as _ssl_ffi
    from OpenSSL._util import lib as _ssl_lib
except ImportError:  # pragma: no cover - another pyOpenSSL: the check says so
    _ssl_ffi = _ssl_lib = None

_SSL_NAMES = ("SSL_read", "SSL_write", "SSL_get_error", "SSL_ERROR_WANT_READ")
_BIO_NAMES = ("BIO_read", "BIO_should_retry", "BIO_should_read")

TLS_DIRECT_CALLS = declare(
    "pyopenssl.direct_calls",
    touches=(
        "OpenSSL._util.lib: " + ", ".join(_SSL_NAMES + _BIO_NAMES),
        "OpenSSL._util.ffi.buffer / from_buffer / new",
        "Connection._ssl / _from_ssl",
        "Connection._raise_ssl_error / _handle_bio_errors (called for any answer but "
        "'nothing yet')",
    ),
    why=(
        "wsmux's TLS transport reads a connection's records, encrypts its writes and "
        "reads out the encrypted bytes with the OpenSSL calls pyOpenSSL's recv, send "
        "and bio_read make, into one buffer kept for it, and takes 'nothing yet' as "
        "an answer, not an exception: every TCP read's records end with one such "
        "read, and every read with an empty bio_read (about 1 us each through "
        "pyOpenSSL, a third of that direct); each record read saves the buffer "
        "pyOpenSSL allocates for it"
    ),
    checked="pyOpenSSL 26.0.0, 26.4.0",
    fallback="pyOpenSSL's Connection.recv, send and bio_read",
    check=lambda: all_of(
        None if _ssl_lib is not None else "OpenSSL._util has no ffi or lib",
        missing_names(_ssl_lib, _SSL_NAMES + _BIO_NAMES),
        missing_names(_ssl_ffi, ("buffer", "from_buffer", "new")),
        code_names(SSL.Connection.recv, ("SSL_read", "_ssl", "_raise_ssl_error")),
        code_names(SSL.Connection.send, ("SSL_write", "_ssl", "_raise_ssl_error")),
        code_names(SSL.Connection.bio_read, ("BIO_read", "_from_ssl", "_handle_bio_errors")),
        code_names(SSL.Connection._handle_bio_errors, ("BIO_should_retry", "BIO_should_read")),
    ),
)

# What tls_recv asks for a call (pyOpenSSL's recv(2**15)), and the most
# tls_bio_read reads into its buffer (more goes through pyOpenSSL).
_RECV_SIZE = 2**15
_BUFFER_SIZE = 2**17


class _Buffer(threading.local):
    """
    The buffer OpenSSL reads into for L{tls_recv} and L{tls_bio_read}, one
    per thread (the calls release the GIL), copied out at once.
    """

    def __init__(self) -> None:
        self.buffer = _ssl_ffi.new("char[]", _BUFFER_SIZE)
        self.view = _ssl_ffi.buffer(self.buffer)


_BUFFER = _Buffer() if TLS_DIRECT_CALLS else None


def _through_pyopenssl(read: Any, size: int) -> Optional[bytes]:
    # The public path: pyOpenSSL's recv or bio_read, "nothing yet" as None.
    try:
        return read(size)  # type: ignore[no-any-return]
    except WantReadError:
        return None


def tls_recv(connection: Any) -> Optional[bytes]:
    """
    The data of the next TLS record C{connection} (a pyOpenSSL
    C{Connection} on memory BIOs) has decrypted, as C{recv(2**15)} reads it;
    L{None} when it has none yet (where C{recv} raises C{WantReadError}).
    Anything else (the peer's close, an error) raises as C{recv} does.

    One difference: for data and for "none yet", C{recv} first re-raises
    an exception a verify, ALPN or OCSP callback stored.  Those callbacks
    run in handshakes, and only the first is done here, by Twisted through
    pyOpenSSL's C{do_handshake}: OpenSSL (3.0 on) answers a client's
    request to renegotiate with an alert, and wsmux never asks for TLS
    1.3's post-handshake authentication.
    """
    if _BUFFER is None:
        return _through_pyopenssl(connection.recv, _RECV_SIZE)
    ssl = connection._ssl
    buffer = _BUFFER
    result = _ssl_lib.SSL_read(ssl, buffer.buffer, _RECV_SIZE)
    if result > 0:
        return buffer.view[:result]  # type: ignore[no-any-return]
    if _ssl_lib.SSL_get_error(ssl, result) == _ssl_lib.SSL_ERROR_WANT_READ:
        return None
    connection._raise_ssl_error(ssl, result)
    return b""


def tls_send(connection: Any, data: Any) -> int:
    """
    Encrypt C{data} (bytes or a memoryview) on C{connection}, as its
    C{send} does: how much it took, or C{WantReadError} and the others
    (with the one difference L{tls_recv} gives, and why it is safe).
    """
    if _BUFFER is None:
        return connection.send(data)  # type: ignore[no-any-return]
    ssl = connection._ssl
    with _ssl_ffi.from_buffer(data) as buffer:
        result = _ssl_lib.SSL_write(ssl, buffer, len(buffer))
    if result <= 0:
        connection._raise_ssl_error(ssl, result)
    return result  # type: ignore[no-any-return]


def tls_bio_read(connection: Any, size: int) -> Optional[bytes]:
    """
    Up to C{size} encrypted bytes from C{connection}'s outgoing memory BIO,
    as its C{bio_read} reads them; L{None} when there are none (where
    C{bio_read} raises C{WantReadError}).
    """
    if _BUFFER is None or size > _BUFFER_SIZE:
        return _through_pyopenssl(connection.bio_read, size)
    bio = connection._from_ssl
    buffer = _BUFFER
    result = _ssl_lib.BIO_read(bio, buffer.buffer, size)
    if result > 0:
        return buffer.view[:result]  # type: ignore[no-any-return]
    if _ssl_lib.BIO_should_retry(bio) and _ssl_lib.BIO_should_read(bio):
        return None
    connection._handle_bio_errors(bio, result)
    return b""  # pragma: no cover - _handle_bio_errors always raises
