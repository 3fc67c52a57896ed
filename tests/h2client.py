"""
An HTTP/2 client for the tests, on the h2 library: one TLS connection
(ALPN h2) carrying WebSockets as extended CONNECT streams (RFC 8441), each
a L{Stream} with the raw peer's reading methods (L{tests.hostile.rawws}).
"""

import socket
import ssl
import struct
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from tests.hostile.rawws import Peer


class H2Peer:
    """
    One HTTP/2 connection over TLS.

    @ivar settings: the server's SETTINGS, as h2 received them.
    @ivar gone: whether the server closed the connection (or sent its last
        GOAWAY).
    @ivar goaways: the server's GOAWAYs, as (error code, last stream ID).
    """

    def __init__(self, port, ca_file, server_name="default.test", timeout=10):
        context = ssl.create_default_context(cafile=ca_file)
        context.set_alpn_protocols(["h2", "http/1.1"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname=server_name)
        self.alpn = self.sock.selected_alpn_protocol()
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.streams = {}
        self.settings = {}
        self.gone = False
        self.goaway = None
        self.goaways = []
        self._unread = b""
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def pump(self, deadline):
        """
        Read once (until C{deadline}) and dispatch what arrived.
        """
        if self.gone:
            raise EOFError("the server closed the connection")
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            data = self.sock.recv(65536)
        except (ssl.SSLError, ConnectionResetError):
            data = b""
        if not data:
            # As a browser does: the server's close is answered with ours.
            self.sock.close()
            self.gone = True
            for stream in self.streams.values():
                stream.ended = True
            raise EOFError("the server closed the connection")
        # A frame at a time: after the server's shutdown notice (a GOAWAY)
        # the connection is made open again for the frames behind it.
        self._unread += data
        while len(self._unread) >= 9:
            end = 9 + int.from_bytes(self._unread[:3], "big")
            if len(self._unread) < end:
                break
            one, self._unread = self._unread[:end], self._unread[end:]
            for event in self.conn.receive_data(one):
                self._event(event)
        self.flush()

    def _event(self, event):
        stream = self.streams.get(getattr(event, "stream_id", None))
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings.update({k: v.new_value for k, v in event.changed_settings.items()})
        elif isinstance(event, h2.events.ResponseReceived):
            stream.headers = dict(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            stream.buffer += event.data
            stream.received += event.flow_controlled_length
            if stream.reads_window and event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset):
            if stream is not None:
                stream.reset_code = event.error_code
                stream.ended = True
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event.error_code
            self.goaways.append((event.error_code, event.last_stream_id))
            if event.error_code == 0 and event.last_stream_id == 2**31 - 1:
                # A server's shutdown notice (RFC 9113 6.8): its streams go
                # on, but h2 takes any GOAWAY as the connection's end
                # (python-hyper/h2#1181).
                self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
            else:
                self.gone = True

    def wait_settings(self, timeout=5):
        deadline = time.monotonic() + timeout
        while not self.settings:
            self.pump(deadline)
        return self.settings

    def open(
        self, path="/echo", headers=(), protocol="websocket", reads_window=True, method="CONNECT"
    ):
        """
        Open a stream: an extended CONNECT for a WebSocket by default.
        """
        sid = self.conn.get_next_available_stream_id()
        pseudo = [(":method", method)]
        if protocol is not None:
            pseudo.append((":protocol", protocol))
        pseudo += [(":scheme", "https"), (":path", path), (":authority", "localhost")]
        extra = [("sec-websocket-version", "13")] if method == "CONNECT" else []
        self.conn.send_headers(sid, pseudo + extra + list(headers), end_stream=method == "GET")
        self.flush()
        stream = self.streams[sid] = Stream(self, sid, reads_window)
        return stream

    def get(self, path, timeout=10):
        """
        An ordinary GET: (status, headers, body).
        """
        stream = self.open(path, protocol=None, method="GET")
        status = stream.status(timeout)
        deadline = time.monotonic() + timeout
        while not stream.ended:
            self.pump(deadline)
        return status, stream.headers, stream.buffer

    def close(self):
        self.sock.close()


class Stream:
    """
    One stream: a WebSocket once its response is 200.
    """

    def __init__(self, peer, sid, reads_window):
        self.peer = peer
        self.sid = sid
        self.reads_window = reads_window
        self.headers = None
        self.buffer = b""
        self.received = 0
        self.ended = False
        self.reset_code = None

    def _wait(self, done, timeout):
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() >= deadline:
                raise TimeoutError("nothing from the server in time")
            self.peer.pump(deadline)

    def status(self, timeout=10):
        self._wait(lambda: self.headers is not None or self.ended, timeout)
        if self.headers is None:
            raise EOFError(f"stream reset ({self.reset_code}) before a response")
        return int(self.headers[b":status"])

    def send(self, data, end=False, timeout=10):
        """
        Send C{data} as DATA frames, waiting for window as needed (not
        after the server ended the stream: what is left is not sent).
        """
        conn = self.peer.conn
        deadline = time.monotonic() + timeout
        while data and not self.ended:
            room = min(conn.local_flow_control_window(self.sid), conn.max_outbound_frame_size)
            if room <= 0:
                self.peer.pump(deadline)
                continue
            conn.send_data(self.sid, data[:room])
            data = data[room:]
            self.peer.flush()
        if end:
            self.end()

    def end(self):
        self.peer.conn.end_stream(self.sid)
        self.peer.flush()

    def reset(self):
        self.peer.conn.reset_stream(self.sid)
        self.peer.flush()

    def read_frame(self, timeout=10):
        """
        The next server frame as (opcode, payload, rsv1).
        """

        def whole():
            b = self.buffer
            if len(b) < 2:
                return None
            n, offset = b[1] & 0x7F, 2
            if n == 126:
                if len(b) < 4:
                    return None
                n, offset = struct.unpack(">H", b[2:4])[0], 4
            elif n == 127:
                if len(b) < 10:
                    return None
                n, offset = struct.unpack(">Q", b[2:10])[0], 10
            return (offset, n) if len(b) >= offset + n else None

        deadline = time.monotonic() + timeout
        while whole() is None:
            if self.ended:
                raise EOFError("the stream ended")
            self.peer.pump(deadline)
        offset, n = whole()
        b0, payload = self.buffer[0], self.buffer[offset : offset + n]
        self.buffer = self.buffer[offset + n :]
        return b0 & 0x0F, payload, bool(b0 & 0x40)

    # The code of the server's close frame (frames before it skipped), or
    # None if the stream ended without one: the raw peer's, on read_frame.
    close_code = Peer.close_code

    def wait_ended(self, timeout=10):
        self._wait(lambda: self.ended, timeout)
        return self.reset_code
