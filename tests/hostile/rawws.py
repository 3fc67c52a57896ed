"""
A raw-socket WebSocket peer for hostile tests: it sends exactly the bytes a
test asks for, with no client library cleaning them up.
"""

import os
import socket
import struct
import time
import zlib

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def request(path, extra="", method="GET", version="13", key=KEY):
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Version: {version}"]
    return ("\r\n".join(lines) + "\r\n" + extra + "\r\n").encode("latin-1")


def frame(payload, opcode=1, fin=True, rsv=0, masked=True, length=None):
    """
    One client frame; C{length} overrides the announced payload length.
    """
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack(">H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack(">Q", n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def close_frame(code, reason=b""):
    return frame(struct.pack(">H", code) + reason, opcode=8)


def deflate(data):
    """
    permessage-deflate compression of one message (RFC 7692 7.2.1).
    """
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


class Peer:
    """
    One raw TCP connection to the server.
    """

    def __init__(self, port, timeout=10, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf is not None:
            # Before connecting, so the TCP window is small from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buffer = b""

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("server closed the connection")
        self.buffer += data

    def response(self, timeout=10):
        """
        The HTTP response head (status line and headers).
        """
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buffer:
            self._fill(deadline)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head.decode("latin-1")

    def status(self, timeout=10):
        return int(self.response(timeout).split(" ", 2)[1])

    def open(self, path="/echo", extra=""):
        self.send(request(path, extra))
        status = self.status()
        assert status == 101, status
        return self

    def read_frame(self, timeout=10):
        """
        The next server frame as (opcode, payload, rsv1).
        """
        deadline = time.monotonic() + timeout
        while len(self.buffer) < 2:
            self._fill(deadline)
        b0, b1 = self.buffer[0], self.buffer[1]
        n, offset = b1 & 0x7F, 2
        if n == 126:
            while len(self.buffer) < 4:
                self._fill(deadline)
            n, offset = struct.unpack(">H", self.buffer[2:4])[0], 4
        elif n == 127:
            while len(self.buffer) < 10:
                self._fill(deadline)
            n, offset = struct.unpack(">Q", self.buffer[2:10])[0], 10
        while len(self.buffer) < offset + n:
            self._fill(deadline)
        payload = self.buffer[offset : offset + n]
        self.buffer = self.buffer[offset + n :]
        return b0 & 0x0F, payload, bool(b0 & 0x40)

    def close_code(self, timeout=10):
        """
        The code of the server's close frame (frames before it are skipped),
        or None if the server dropped the connection without one.
        """
        deadline = time.monotonic() + timeout
        try:
            while True:
                opcode, payload, _ = self.read_frame(max(0.01, deadline - time.monotonic()))
                if opcode == 8:
                    return struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
        except (EOFError, ConnectionResetError):
            return None

    def closed(self, timeout=10):
        """
        Whether the server closes the TCP connection within C{timeout}.
        """
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self._fill(deadline)
        except (EOFError, ConnectionResetError):
            return True
        except TimeoutError:
            return False
        return False

    def close(self):
        self.sock.close()


def rss_kib(pid):
    """
    The resident set size of a process, in KiB.
    """
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")
