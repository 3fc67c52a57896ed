"""
HTTP resources from the configuration, served by a real twistd wsmux:
static files (types, conditional and range requests, nothing outside the
directory), a WSGI application, a redirect, any twisted.web resource.
"""

import os
import socket
import urllib.error
import urllib.request

import pytest
from websockets.sync.client import connect


def raw_get(port, target, extra=""):
    # The request line exactly as written: no client normalises it.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head.decode("latin-1"), body


@pytest.fixture
def site_dir(tmp_path):
    public = tmp_path / "public"
    (public / "css").mkdir(parents=True)
    (public / "index.html").write_text("<h1>home</h1>")
    (public / "css" / "site.css").write_text("body { color: red }")
    (public / "data.bin").write_bytes(bytes(range(256)) * 4)
    (public / ".git").mkdir()
    (public / ".git" / "config").write_text("[core]")
    (tmp_path / "secret.txt").write_text("top secret")
    os.symlink(tmp_path / "secret.txt", public / "escape.txt")
    config = tmp_path / "wsmux.toml"
    config.write_text(
        "[limits]\nmax_body_size = 1000\n\n"
        "[[routes]]\npath = '/ws'\nhandler = 'echo'\n\n"
        "[[resources]]\npath = '/'\nstatic = 'public'\n\n"
        "[[resources]]\npath = '/api'\nwsgi = 'tests.handlers_for_tests:wsgi_app'\n\n"
        "[[resources]]\npath = '/old'\nredirect = 'https://example.com/new'\nstatus = 301\n"
    )
    return config


def test_static_wsgi_redirect_and_routes_on_one_port(start_server, site_dir):
    server = start_server(
        "--config", str(site_dir), "--resource", "/hello=tests.handlers_for_tests.hello_resource"
    )
    port = server.port
    status, head, body = raw_get(port, "/")
    assert (status, body) == (200, b"<h1>home</h1>")
    assert "Content-Type: text/html" in head
    status, head, body = raw_get(port, "/css/site.css")
    assert status == 200 and "Content-Type: text/css" in head
    modified = next(line for line in head.split("\r\n") if line.startswith("Last-Modified:"))
    status, _, body = raw_get(port, "/css/site.css", f"If-Modified-Since: {modified[15:]}\r\n")
    assert (status, body) == (304, b"")
    status, head, body = raw_get(port, "/data.bin", "Range: bytes=256-511\r\n")
    assert status == 206 and "Content-Range: bytes 256-511/1024" in head
    assert body == bytes(range(256))
    # Many (overlapping) ranges: the whole file once, not the file many times.
    many = ",".join(["0-"] * 50)
    status, head, body = raw_get(port, "/data.bin", f"Range: bytes={many}\r\n")
    assert status == 200 and len(body) == 1024
    # A NUL or a byte that is not UTF-8 in a segment: a plain 404.
    for target in ("/index.html%00.txt", "/%c0%ae%c0%ae/secret.txt"):
        assert raw_get(port, target)[0] == 404, target
    # Nothing outside the directory, however it is asked for.
    for target in (
        "/../secret.txt",
        "/css/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/css/..%2f..%2fsecret.txt",
        "/css/%2e%2e%2F%2e%2e%2Fsecret.txt",
        "/escape.txt",
        "/.git/config",
        "/css/",
        "//etc/passwd",
    ):
        status, _, body = raw_get(port, target)
        assert status in (404, 400), (target, status)
        assert b"top secret" not in body and b"[core]" not in body and b"root:" not in body
    # The WSGI app sees its mount point and the rest of the path.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/items/7?x=1", timeout=5) as r:
        assert r.read() == b"GET script=/api path=/items/7 query=x=1 body=0"
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/up", data=b"y" * 500)
    with urllib.request.urlopen(request, timeout=5) as r:
        assert r.read() == b"POST script=/api path=/up query= body=500"
    # A body over the server's max_body_size never reaches it.
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/up", data=b"y" * 5000)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 413
    status, head, _ = raw_get(port, "/old/page")
    assert status == 301 and "Location: https://example.com/new" in head
    status, _, body = raw_get(port, "/hello/there")
    assert (status, body) == (200, b"hello from hello rest=there")
    # The route beside them, and the health check, still answer.
    with connect(server.url("/ws")) as ws:
        ws.send("hi")
        assert ws.recv(timeout=5) == "hi"
    assert raw_get(port, "/healthz")[0] == 200
