"""
The seam's pyOpenSSL part (L{wsmux._compat_pyopenssl}): a TLS connection's
records read, encrypted and read out with OpenSSL's calls directly give
what pyOpenSSL's own C{recv}, C{send} and C{bio_read} give, errors included.

Each test runs twice: on the direct calls, and on pyOpenSSL's methods (the
public path).  Two pyOpenSSL connections on memory BIOs, as Twisted's TLS
transport makes them, talk to each other in memory.
"""

import threading

import pytest
from OpenSSL import SSL

from tests.pki import make_pki
from wsmux import _compat_pyopenssl as seam
from wsmux._compat_pyopenssl import tls_bio_read, tls_recv, tls_send


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(
    params=[
        pytest.param("direct", marks=pytest.mark.uses_internal("pyopenssl.direct_calls")),
        "public",
    ]
)
def path(request, monkeypatch):
    if request.param == "public":
        monkeypatch.setattr(seam, "_BUFFER", None)
    return request.param


def move(source, target):
    """
    Everything C{source} has written, into C{target}'s incoming BIO.
    """
    while True:
        try:
            data = source.bio_read(2**16)
        except SSL.WantReadError:
            return
        target.bio_write(data)


def connections(pki, version=None, server=None):
    """
    A server and a client connection past their handshake (the server's
    on a context of its own unless given).
    """
    if server is None:
        server_context = SSL.Context(SSL.TLS_SERVER_METHOD)
        server_context.use_certificate_chain_file(pki.files["a.test"][0])
        server_context.use_privatekey_file(pki.files["a.test"][1])
        server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client_context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if version is not None:
        client_context.set_max_proto_version(version)
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    for _ in range(10):
        for connection in (client, server):
            try:
                connection.do_handshake()
            except SSL.WantReadError:
                pass
        move(client, server)
        move(server, client)
    # TLS 1.3's session tickets, read by the client.
    with pytest.raises(SSL.WantReadError):
        client.recv(1)
    return server, client


@pytest.mark.parametrize("version", [SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION])
def test_records_are_read_one_at_a_time_then_none(pki, path, version):
    server, client = connections(pki, version)
    assert tls_recv(server) is None
    messages = [b"first", b"x" * 20000, b"third"]  # the second is two records
    for message in messages:
        client.sendall(message)  # a record a call, at most 16 KiB
    move(client, server)
    read = []
    while (data := tls_recv(server)) is not None:
        read.append(data)
    assert read == [b"first", b"x" * 2**14, b"x" * (20000 - 2**14), b"third"]
    assert all(type(data) is bytes for data in read)
    assert tls_recv(server) is None


def test_the_peers_close_is_zero_return(pki, path):
    server, client = connections(pki)
    client.send(b"last")
    client.shutdown()
    move(client, server)
    assert tls_recv(server) == b"last"
    with pytest.raises(SSL.ZeroReturnError):
        tls_recv(server)


def test_a_damaged_record_is_an_error_and_not_nothing_yet(pki, path):
    server, client = connections(pki)
    client.send(b"hello")
    record = bytearray(client.bio_read(2**16))
    record[-1] ^= 1
    server.bio_write(bytes(record))
    with pytest.raises(SSL.Error) as raised:
        tls_recv(server)
    assert not isinstance(raised.value, SSL.WantReadError)
    assert "bad record mac" in str(raised.value)


def test_an_end_of_input_mid_record_is_an_unexpected_eof(pki, path):
    server, client = connections(pki)
    client.send(b"hello")
    server.bio_write(client.bio_read(2**16)[:10])
    server.bio_shutdown()
    with pytest.raises(SSL.SysCallError, match="Unexpected EOF"):
        tls_recv(server)


def test_writes_are_encrypted_and_read_out_whole(pki, path):
    server, client = connections(pki)
    assert tls_bio_read(server, 2**15) is None
    message = bytes(range(256)) * 400  # 100 KiB: several records
    view = memoryview(message)
    done = 0
    records = []
    while done < len(message):
        done += tls_send(server, view[done : done + 2**16])
        while (chunk := tls_bio_read(server, 2**15)) is not None:
            records.append(chunk)
    assert tls_bio_read(server, 2**15) is None
    assert all(type(chunk) is bytes for chunk in records)
    client.bio_write(b"".join(records))
    received = b""
    while len(received) < len(message):
        received += client.recv(2**15)
    assert received == message


def test_a_read_out_bigger_than_the_buffer_takes_pyopenssls_own(pki, path):
    server, client = connections(pki)
    message = b"y" * 2**18
    done = 0
    while done < len(message):
        done += tls_send(server, message[done:])
    out = tls_bio_read(server, 2**19)  # more than the buffer: one call still
    assert out is not None and len(out) > len(message)
    assert tls_bio_read(server, 2**19) is None
    client.bio_write(out)
    received = b""
    while len(received) < len(message):
        received += client.recv(2**15)
    assert received == message


def test_a_write_before_the_handshake_wants_a_read(pki, path):
    context = SSL.Context(SSL.TLS_SERVER_METHOD)
    context.use_certificate_chain_file(pki.files["a.test"][0])
    context.use_privatekey_file(pki.files["a.test"][1])
    server = SSL.Connection(context, None)
    server.set_accept_state()
    with pytest.raises(SSL.WantReadError):
        tls_send(server, b"too early")


@pytest.mark.uses_internal("pyopenssl.direct_calls")
def test_each_thread_reads_into_a_buffer_of_its_own(pki):
    # The calls release the GIL: two threads must never share the buffer.
    server, client = connections(pki)
    client.send(b"main")
    move(client, server)
    assert tls_recv(server) == b"main"
    seen = []
    other_server, other_client = connections(pki)
    other_client.send(b"other")
    move(other_client, other_server)

    def read():
        seen.append((seam._BUFFER.buffer, tls_recv(other_server)))

    thread = threading.Thread(target=read)
    thread.start()
    thread.join(10)
    ((buffer, data),) = seen
    assert data == b"other"
    assert buffer != seam._BUFFER.buffer


def test_a_clients_renegotiation_is_refused_on_wsmux_contexts(pki, path):
    # Why tls_recv may skip pyOpenSSL's re-raising of what a handshake
    # callback stored: no handshake happens after the first one.  A TLS 1.2
    # client asking for another is answered with a no_renegotiation alert.
    from wsmux.tls import HostCertificate, SniContextMap, TlsSettings

    contexts = SniContextMap(TlsSettings(default=HostCertificate("", *pki.files["a.test"])))
    server, client = connections(
        pki, SSL.TLS1_2_VERSION, server=contexts.serverConnectionForTLS(None)
    )
    assert server.get_protocol_version_name() == "TLSv1.2"
    client.send(b"before")
    assert client.renegotiate()
    with pytest.raises(SSL.WantReadError):
        client.do_handshake()
    move(client, server)
    assert tls_recv(server) == b"before"
    assert tls_recv(server) is None  # the request read; the alert written
    move(server, client)
    with pytest.raises(SSL.Error, match="no renegotiation"):
        client.recv(100)
