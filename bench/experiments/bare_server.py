"""
A bare WebSocket handshake server: epoll, the standard library's ssl, no
framework.  It answers each upgrade with a 101 and the first frame after it
(the load generator's close) with a close, and nothing else: a bound on what a Python server can do per
handshake, for docs/benchmarks.rst ("What a leaner TLS layer would buy").

    python bench/experiments/bare_server.py PORT [CERT KEY]
    bench/loadgen handshakes PORT [--tls] --server-pid PID

Loopback only; not a server to use.
"""

from __future__ import annotations

import base64
import hashlib
import select
import socket
import ssl
import sys
from typing import Any

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HANDSHAKE, HEAD, OPEN = range(3)


class Conn:
    def __init__(self, sock: Any, state: int) -> None:
        self.sock = sock
        self.state = state
        self.buffer = b""


def switching(head: bytes) -> bytes | None:
    """The 101 answering request head C{head}, or L{None} without a key."""
    key = next(
        (
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        ),
        None,
    )
    if key is None:
        return None
    accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
    )


def step(conn: Conn, tls: bool) -> bool:
    """Move C{conn} on with what it has; whether it is still open."""
    sock = conn.sock
    while True:
        if conn.state == HANDSHAKE:
            try:
                sock.do_handshake()
            except ssl.SSLWantReadError:
                return True
            except (ssl.SSLError, OSError):
                return False
            conn.state = HEAD
        try:
            data = sock.recv(65536)
        except (ssl.SSLWantReadError, BlockingIOError):
            return True
        except OSError:
            return False
        if not data:
            return False
        conn.buffer += data
        if conn.state == HEAD:
            end = conn.buffer.find(b"\r\n\r\n")
            if end < 0:
                continue
            head, conn.buffer = conn.buffer[:end], conn.buffer[end + 4 :]
            response = switching(head)
            if response is None:
                return False
            sock.send(response)
            conn.state = OPEN
        if len(conn.buffer) >= 6 and len(conn.buffer) >= 6 + (conn.buffer[1] & 127):
            sock.send(b"\x88\x02\x03\xe8")  # the close, 1000
            if tls:
                try:
                    sock.unwrap()
                except (ssl.SSLError, OSError):
                    pass
            return False


def main(port: int, cert: str | None, key: str | None) -> None:
    context = None
    if cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, Conn] = {}
    while True:
        for fd, _ in poller.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if context is not None:
                        sock = context.wrap_socket(
                            sock, server_side=True, do_handshake_on_connect=False
                        )
                    conn = Conn(sock, HANDSHAKE if context else HEAD)
                    conns[sock.fileno()] = conn
                    poller.register(sock.fileno(), select.EPOLLIN)
                continue
            conn = conns[fd]
            if not step(conn, context is not None):
                poller.unregister(fd)
                del conns[fd]
                conn.sock.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), *(sys.argv[2:4] if len(sys.argv) > 3 else (None, None)))
