"""
Streaming against a real twistd wsmux: 256 MiB to a slow reader, and a
256 MiB upload to a streaming handler, with the server's memory bounded.
"""

import time

from websockets.sync.client import connect

from tests.hostile.rawws import Peer, frame, rss_kib

MiB = 1024 * 1024


def routes(start_server, tmp_path):
    config = tmp_path / "streams.toml"
    config.write_text("""
[[routes]]
path = "/stream"
handler = "tests.handlers_for_tests.BigStream"

[[routes]]
path = "/upload"
handler = "tests.handlers_for_tests.BigUpload"
max_fragments = 0
""")
    return start_server("--config", str(config))


def test_256_mib_to_a_slow_reader_keeps_memory_bounded(start_server, tmp_path):
    server = routes(start_server, tmp_path)
    before = rss_kib(server.process.pid)
    reader = Peer(server.port, rcvbuf=65536).open("/stream")
    reader.send(frame(b"go 256"))
    want = 256 * MiB
    received, peak = 0, 0
    reader.sock.settimeout(10)
    started = time.monotonic()
    while received < want and time.monotonic() - started < 120:
        data = reader.sock.recv(1 << 20)
        assert data, "the server closed the stream"
        received += len(data)
        if received // (16 * MiB) != (received - len(data)) // (16 * MiB):
            peak = max(peak, rss_kib(server.process.pid) - before)
            time.sleep(0.05)  # a slow reader
    # 256 MiB of payload plus one small frame header per 64 KiB chunk.
    assert received >= want
    # Stated bound: streaming 256 MiB to a slow reader costs the server
    # less than 32 MiB.
    assert peak < 32 * 1024, f"server grew by {peak} KiB"


def test_256_mib_upload_to_a_streaming_handler(start_server, tmp_path):
    server = routes(start_server, tmp_path)
    before = rss_kib(server.process.pid)
    chunk = b"\x01" * MiB
    with connect(server.url("/upload"), max_size=None, open_timeout=10) as ws:
        ws.send(chunk for _ in range(256))  # one message, 256 fragments of 1 MiB
        assert ws.recv(timeout=120) == str(256 * MiB)
    # Stated bound: the upload cost the server less than 32 MiB.
    assert rss_kib(server.process.pid) - before < 32 * 1024
