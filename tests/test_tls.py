"""
SNI host selection, strict mode, odd names and reload, in memory: TLS on
both sides through TLSMemoryBIOFactory and iosim.
"""

import sys

import pytest
from OpenSSL import SSL
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, CertificateOptions, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.test import iosim
from zope.interface import implementer

from tests.pki import make_pki
from wsmux._compat_twisted import write_now
from wsmux.tls import (
    CertificateError,
    HostCertificate,
    SniContextMap,
    TlsSettings,
    normalize_server_name,
    servable_name,
    tls_factory,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def settings(pki, **kw):
    hosts = tuple(
        HostCertificate(host, *pki.files[host]) for host in ("a.test", "b.test", "*.wild.test")
    )
    return TlsSettings(default=HostCertificate("", *pki.files["default.test"]), hosts=hosts, **kw)


class Greeter(Protocol):
    def connectionMade(self):
        self.transport.write(b"hello")


class Recorder(Protocol):
    data = b""
    lost = None

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.lost = reason


@implementer(IOpenSSLClientConnectionCreator)
class RawServerName:
    """
    A TLS client sending C{sni} as its server name, byte for byte, and
    checking the server's certificate against C{trust} (not its name).
    """

    def __init__(self, sni, trust):
        self.sni = sni
        self.options = CertificateOptions(trustRoot=trust)

    def clientConnectionForTLS(self, protocol):
        connection = SSL.Connection(self.options.getContext(), None)
        connection.set_tlsext_host_name(self.sni)
        return connection


def connected(contexts, pki, server_name, sni=None):
    """
    Connect a TLS client to C{contexts} in memory, sending C{server_name}
    (none at all when L{None}), or else the raw server name C{sni}
    (Twisted's client sends only IDNA names); return the client's TLS
    protocol and its recorder once the bytes have stopped moving.
    """
    clock = Clock()
    server_factory = TLSMemoryBIOFactory(contexts, False, Factory.forProtocol(Greeter), clock=clock)
    trust = Certificate.loadPEM(open(pki.ca_file, "rb").read())
    client_options = optionsForClientTLS(server_name or "default.test", trustRoot=trust)
    if server_name is None:
        client_options._sendServerName = False  # send no server name at all
    if sni is not None:
        client_options = RawServerName(sni, trust)
    client_factory = TLSMemoryBIOFactory(
        client_options, True, Factory.forProtocol(Recorder), clock=clock
    )
    server = server_factory.buildProtocol(None)
    client = client_factory.buildProtocol(None)
    recorder = client.wrappedProtocol
    pump = iosim.connect(
        server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), clock=clock
    )
    pump.flush()
    return client, recorder


def handshake(contexts, pki, server_name, sni=None):
    """
    Connect in memory; return the common name the client saw (or None) and
    the client protocol.
    """
    client, recorder = connected(contexts, pki, server_name, sni)
    cert = client.getPeerCertificate()
    name = cert.get_subject().CN if cert is not None else None
    return name, recorder


@pytest.mark.parametrize(
    "server_name, common_name",
    [
        ("a.test", "a.test"),
        ("b.test", "b.test"),
        ("x.wild.test", "*.wild.test"),
        ("default.test", "default.test"),
    ],
)
def test_sni_picks_the_hosts_certificate(pki, server_name, common_name):
    contexts = SniContextMap(settings(pki))
    name, client = handshake(contexts, pki, server_name)
    assert name == common_name
    assert client.data == b"hello"


def test_no_sni_and_unknown_names_get_the_default(pki):
    contexts = SniContextMap(settings(pki))
    assert contexts.options_for(normalize_server_name(b"unknown.test"))[1] is None
    assert handshake(contexts, pki, None)[0] == "default.test"
    assert contexts.handshakes["(default)"] >= 1
    assert contexts.options_for("deep.x.wild.test")[1] is None  # one label only
    assert contexts.options_for("wild.test")[1] is None


def refusal(contexts, pki, server_name):
    """
    Connect in memory to a server that refuses C{server_name}; return the
    client protocol, its connection lost.
    """
    _, recorder = connected(contexts, pki, server_name)
    assert recorder.data == b""
    assert "unrecognized name" in str(recorder.lost.value).lower()
    return recorder


def test_strict_mode_refuses_unknown_names(pki, capsys):
    hook = sys.excepthook
    contexts = SniContextMap(settings(pki, strict=True))
    refusal(contexts, pki, "unknown.test")
    # The refusal printed nothing and left the process's hook as it was.
    assert sys.excepthook is hook
    assert "_UnrecognizedName" not in capsys.readouterr().err
    # Known names still work in strict mode.
    assert handshake(contexts, pki, "a.test")[0] == "a.test"


@pytest.mark.parametrize(
    "raw",
    [
        b"a" * 300,
        b"../x",
        b"..",
        "b\xfccher.test".encode("latin-1"),
        "é.test".encode(),
        b"a/b",
        b"\x00",
        b"a b.test",
        b"a*.test",
        b"\x7f.test",
    ],
)
def test_odd_names_are_unknown_names(raw):
    assert normalize_server_name(raw) is None


@pytest.mark.parametrize(
    "raw, name",
    [
        (b"a.test", "a.test"),
        (b"A.Test.", "a.test"),
        (b"xn--bcher-kva.TEST", "xn--bcher-kva.test"),
        (b"a-1.b2.test", "a-1.b2.test"),
        (b"localhost", "localhost"),
        (b"My_Host.internal", "my_host.internal"),
    ],
)
def test_names_are_lower_cased_without_the_trailing_dot(raw, name):
    assert normalize_server_name(raw) == name


@pytest.mark.parametrize(
    "default, served, refused",
    [
        ("default.test", ["default.test", "DEFAULT.test"], ["other.test", "a.test.evil"]),
        ("*.wild.test", ["x.wild.test", "y.WILD.test"], ["wild.test", "a.b.wild.test"]),
    ],
)
def test_strict_mode_serves_the_names_of_the_default_certificate(pki, default, served, refused):
    # With a default certificate alone, strict mode refuses the names it is
    # not for, not every name a client sends (browsers always send one).
    only = TlsSettings(default=HostCertificate("", *pki.files[default]), strict=True)
    contexts = SniContextMap(only)
    for name in served:
        seen, client = handshake(contexts, pki, name)
        assert seen == default and client.lost is None, name
    for name in refused:
        refusal(contexts, pki, name)


def test_certificate_names_are_the_alternative_names_else_the_common_name(pki):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from OpenSSL import crypto

    from wsmux.tls import certificate_names

    def made(name, alternatives):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
        )
        if alternatives is not None:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in alternatives]), False
            )
        return crypto.X509.from_cryptography(builder.sign(key, hashes.SHA256()))

    assert certificate_names(made("Only.CN.test", None)) == {"only.cn.test"}
    assert certificate_names(made("cn.test", ["A.test", "*.B.test."])) == {"a.test", "*.b.test"}
    assert certificate_names(made("cn.test", [])) == frozenset()


def test_odd_names_in_a_directory_never_touch_the_filesystem(pki, monkeypatch):
    contexts = SniContextMap(TlsSettings(directory=str(pki.directory)))
    import builtins
    import os

    opened = []
    monkeypatch.setattr(
        builtins, "open", lambda *a, **k: opened.append(a) or (_ for _ in ()).throw(OSError)
    )
    monkeypatch.setattr(os, "listdir", lambda *a: opened.append(a) or [])
    for raw in (b"../certs/DEFAULT", b"../../etc/passwd", b"a" * 300, b"a.test"):
        label, _ = contexts.options_for(normalize_server_name(raw))
        assert label in ("(default)", "a.test")
    assert opened == []


def test_a_host_name_with_an_underscore_is_served(pki):
    # Internal names carry underscores; clients send them in SNI.  A host
    # configured with one is served, strict mode included, not the default.
    # (Its certificate is b.test's: trustme puts no underscore in a name.)
    contexts = SniContextMap(
        TlsSettings(
            default=HostCertificate("", *pki.files["default.test"]),
            hosts=(HostCertificate("My_Host.test", *pki.files["b.test"]),),
            strict=True,
        )
    )
    assert handshake(contexts, pki, None, sni=b"my_host.test")[0] == "b.test"
    assert contexts.handshakes == {"my_host.test": 1}


def test_a_host_entry_no_client_could_ask_for_is_refused(pki):
    # What the configuration file refuses, the Python API refuses too.
    hosts = (HostCertificate("bad name", *pki.files["a.test"]),)
    with pytest.raises(CertificateError, match="'bad name' is not a host name"):
        SniContextMap(TlsSettings(default=HostCertificate("", *pki.files["b.test"]), hosts=hosts))


def test_a_directory_file_no_client_could_ask_for_is_skipped_with_a_warning(pki, tmp_path):
    (tmp_path / "DEFAULT.pem").write_bytes((pki.directory / "DEFAULT.pem").read_bytes())
    (tmp_path / "b.test.pem").write_bytes((pki.directory / "b.test.pem").read_bytes())
    (tmp_path / "my host.pem").write_bytes((pki.directory / "a.test.pem").read_bytes())
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        contexts = SniContextMap(TlsSettings(directory=str(tmp_path)))
    finally:
        globalLogPublisher.removeObserver(events.append)
    warned = [formatEvent(e) for e in events if "skipped" in e.get("log_format", "")]
    assert len(warned) == 1 and "my host.pem" in warned[0] and "'my host'" in warned[0]
    assert handshake(contexts, pki, "b.test")[0] == "b.test"


def test_a_directory_of_nothing_but_skipped_files_names_them(pki, tmp_path):
    (tmp_path / "old cert.pem").write_bytes((pki.directory / "a.test.pem").read_bytes())
    with pytest.raises(CertificateError, match=r"no certificate to serve: skipped 'old cert.pem'"):
        SniContextMap(TlsSettings(directory=str(tmp_path)))


@pytest.mark.parametrize(
    "name, servable",
    [
        ("a.test", True),
        ("A_B.test.", True),
        ("*.a.test", True),
        ("10.0.0.1", True),
        ("::1", True),
        ("a" * 255, True),
        ("a" * 255 + ".", True),  # the dot goes, as from a server name
        ("a" * 256, False),
        ("*." + "a" * 253, True),  # x. and 253 bytes: a whole server name
        ("*." + "a" * 254, False),  # no server name that long is matched
        ("*.", False),
        ("*", False),
        ("*.*.a.test", False),
        ("a b.test", False),
        ("b\u00fccher.test", False),
        ("xn--bcher-kva.test", True),
        ("", False),
        (".", False),
    ],
)
def test_which_configured_names_can_be_served(name, servable):
    assert servable_name(name) is servable


def test_directory_mode_serves_each_file(pki):
    contexts = SniContextMap(TlsSettings(directory=str(pki.directory)))
    assert handshake(contexts, pki, "b.test")[0] == "b.test"
    assert handshake(contexts, pki, "q.wild.test")[0] == "*.wild.test"
    assert handshake(contexts, pki, None)[0] == "default.test"


def unsupported_key(tmp_path):
    from tests.pki import UNSUPPORTED_CURVE_KEY

    (tmp_path / "weird.key").write_bytes(UNSUPPORTED_CURVE_KEY)
    return str(tmp_path / "weird.key")


def test_reload_swaps_certificates_and_keeps_them_on_error(pki, tmp_path):
    chain, key = pki.issue("a.test")
    chain_file, key_file = tmp_path / "a.crt", tmp_path / "a.key"
    chain_file.write_bytes(chain)
    key_file.write_bytes(key)
    tls = TlsSettings(
        default=HostCertificate("", *pki.files["default.test"]),
        hosts=(HostCertificate("a.test", str(chain_file), str(key_file)),),
    )
    contexts = SniContextMap(tls)
    assert handshake(contexts, pki, "a.test")[0] == "a.test"
    new_chain, new_key = pki.issue("a.test", common_name="a.test v2")
    chain_file.write_bytes(new_chain)
    key_file.write_bytes(new_key)
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        assert contexts.reload() is True
    finally:
        globalLogPublisher.removeObserver(events.append)
    # The default and a.test's.
    assert "TLS certificates reloaded (2 certificate(s))" in [formatEvent(e) for e in events]
    assert handshake(contexts, pki, "a.test")[0] == "a.test v2"
    chain_file.write_bytes(b"not a certificate")
    assert contexts.reload() is False
    assert handshake(contexts, pki, "a.test")[0] == "a.test v2"
    chain_file.write_bytes(new_chain)
    key_file.write_bytes(open(unsupported_key(tmp_path), "rb").read())
    assert contexts.reload() is False
    assert handshake(contexts, pki, "a.test")[0] == "a.test v2"


@pytest.mark.parametrize(
    "entry, message",
    [
        (lambda p, t: HostCertificate("", str(t / "missing.pem")), "missing.pem: cannot read"),
        (lambda p, t: HostCertificate("", p.files["a.test"][1]), "no usable PEM certificate"),
        (
            lambda p, t: HostCertificate("", p.files["a.test"][0], p.files["b.test"][1]),
            "does not match",
        ),
        (
            lambda p, t: HostCertificate("", p.files["a.test"][0], unsupported_key(t)),
            "weird.key: no usable PEM private key .*not supported",
        ),
    ],
)
def test_bad_certificates_name_the_file(pki, tmp_path, entry, message):
    with pytest.raises(CertificateError, match=message):
        SniContextMap(TlsSettings(default=entry(pki, tmp_path)))


def test_contexts_are_hardened(pki):
    from OpenSSL import SSL

    contexts = SniContextMap(settings(pki))
    for options in [contexts._default, *contexts._exact.values(), *contexts._wildcard.values()]:
        context = options.getContext()
        current = context.set_options(0)  # returns the options in force
        assert current & SSL.OP_NO_COMPRESSION
        assert current & SSL.OP_NO_TLSv1 and current & SSL.OP_NO_TLSv1_1


def test_encrypted_key_with_passphrase(pki, tmp_path):
    from cryptography.hazmat.primitives import serialization

    chain, key_pem = pki.issue("a.test")
    key = serialization.load_pem_private_key(key_pem, None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    )
    (tmp_path / "a.crt").write_bytes(chain)
    (tmp_path / "a.key").write_bytes(encrypted)
    entry = HostCertificate("", str(tmp_path / "a.crt"), str(tmp_path / "a.key"), "s3cret")
    assert handshake(SniContextMap(TlsSettings(default=entry)), pki, "a.test")[0] == "a.test"
    wrong = HostCertificate("", str(tmp_path / "a.crt"), str(tmp_path / "a.key"), "wrong")
    with pytest.raises(CertificateError, match="a.key: no usable PEM private key"):
        SniContextMap(TlsSettings(default=wrong))


# -- the TLS seam (wsmux._compat_twisted): direct writes and whole reads -------


class Counter(Protocol):
    """
    Keeps each read it is given.
    """

    def connectionMade(self):
        self.reads = []

    def dataReceived(self, data):
        self.reads.append(data)


def tls_pair(pki, server_protocol, client_protocol=TLSMemoryBIOProtocol, site=None, clock=None):
    """
    A wsmux TLS server (L{tls_factory}; of C{server_protocol}, or of
    C{site}) and a client whose every write is a TLS record of its own,
    connected in memory and past the handshake.
    """
    clock = clock or Clock()
    contexts = SniContextMap(settings(pki))
    server_factory = tls_factory(contexts, site or Factory.forProtocol(server_protocol))
    server_factory._clock = clock
    trust = Certificate.loadPEM(open(pki.ca_file, "rb").read())
    client_factory = TLSMemoryBIOFactory(
        optionsForClientTLS("a.test", trustRoot=trust),
        True,
        Factory.forProtocol(Recorder),
        clock=clock,
    )
    client_factory.protocol = client_protocol
    server = server_factory.buildProtocol(None)
    client = client_factory.buildProtocol(None)
    pump = iosim.connect(
        server, iosim.makeFakeServer(server), client, iosim.makeFakeClient(client), clock=clock
    )
    pump.flush()
    return server, client, pump, clock


@pytest.mark.uses_internal("twisted.tls_whole_reads")
def test_every_record_of_a_read_is_one_delivery(pki):
    server, client, pump, _ = tls_pair(pki, Counter)
    messages = [b"message %d " % i * 20 for i in range(30)]
    for message in messages:
        client.write(message)  # a record each
    pump.flush()
    assert server.wrappedProtocol.reads == [b"".join(messages)]
    client.write(b"later")
    pump.flush()
    assert server.wrappedProtocol.reads[1:] == [b"later"]


def test_each_record_is_a_delivery_on_twisteds_path(pki, monkeypatch):
    # What wsmux's TLS transport falls back to: Twisted's own delivery.
    import wsmux._compat_twisted as seam

    monkeypatch.setattr(seam, "TLS_WHOLE_READS", False)
    server, client, pump, _ = tls_pair(pki, Counter)
    for message in (b"one", b"two", b"three"):
        client.write(message)
    pump.flush()
    assert server.wrappedProtocol.reads == [b"one", b"two", b"three"]


@pytest.mark.uses_internal("twisted.tls_direct_write")
def test_direct_writes_go_at_once_and_keep_their_order(pki):
    server, client, pump, clock = tls_pair(pki, Counter)
    received = client.wrappedProtocol
    big = bytes(range(256)) * 1200  # 300 KiB: several slices, many records
    # (No reactor turn passes in the pumps below but the last.)
    server.write(b"1")  # Twisted's path: its aggregator holds it a turn
    pump.flush(advanceClock=False)
    assert received.data == b""
    write_now(server, [b"2"])  # sent at once, after what Twisted holds
    pump.flush(advanceClock=False)
    assert received.data == b"12"
    server.write(b"3")
    write_now(server, [b"4", big])
    pump.flush(advanceClock=False)
    assert received.data == b"1234" + big
    clock.advance(0)  # nothing was left in Twisted's aggregator
    pump.flush()
    assert received.data == b"1234" + big
    # Both ways still work, and the connection closes cleanly.
    client.write(b"back")
    pump.flush()
    assert server.wrappedProtocol.reads == [b"back"]
    server.loseConnection()
    pump.flush()
    assert received.lost is not None


def test_writes_outside_a_read_gather_in_twisteds_records(pki):
    # A timer's sends (nothing held): Twisted's TLS path gathers a turn's
    # writes into one record, instead of a record and a send each.
    from wsmux._writes import WriteScheduler

    server, client, pump, clock = tls_pair(pki, Counter)
    writes = WriteScheduler()
    records = []
    tcp_write = server.transport.write
    server.transport.write = lambda data: (records.append(data), tcp_write(data))
    for i in range(50):
        message = b"message %d;" % i
        writes.hold(server, [message], len(message))
    pump.flush(advanceClock=False)
    assert client.wrappedProtocol.data == b""
    clock.advance(0)
    pump.flush()
    assert client.wrappedProtocol.data == b"".join(b"message %d;" % i for i in range(50))
    assert len(records) == 1


class Answerer(Protocol):
    """
    Answers each read with what it read, upper-cased.
    """

    def dataReceived(self, data):
        self.transport.write(data.upper())


@pytest.mark.uses_internal("twisted.tls_direct_write")
def test_records_twisteds_tls_path_flushes_are_sent_at_once_on_tcp(pki):
    # On a real TCP connection, what Twisted's TLS path flushes itself (the
    # handshake's flights, the session tickets, an answer from a read) is
    # sent at once, not left in the TCP transport's buffer for a reactor
    # turn: the TCP transport's own write is never called.
    import select
    import socket
    import ssl
    import threading

    from twisted.internet.testing import MemoryReactorClock

    from wsmux._compat_twisted import TCP_SERVER

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    factory = tls_factory(SniContextMap(settings(pki)), Factory.forProtocol(Answerer))
    reactor = MemoryReactorClock()
    factory._clock = reactor  # as tls_pair does: the turn Twisted's path waits for
    tls = factory.buildProtocol(None)
    port = type("Port", (), {"_realPortNumber": 0})()
    transport = TCP_SERVER(ours, tls, ("127.0.0.1", 1), port, 1, reactor)
    buffered = []
    transport.write = buffered.append  # Twisted's buffered path, if taken
    tls.makeConnection(transport)

    context = ssl.create_default_context(cafile=pki.ca_file)
    client = context.wrap_socket(theirs, server_hostname="a.test", do_handshake_on_connect=False)
    client.settimeout(10)
    answers = []

    def talk():
        client.do_handshake()
        client.sendall(b"ping")
        answers.append(client.recv(100))

    thread = threading.Thread(target=talk, daemon=True)
    thread.start()
    for _ in range(200):  # bounded: the talk takes a few reads
        if not thread.is_alive():
            break
        if select.select([ours], [], [], 0.05)[0]:
            transport.doRead()
        reactor.advance(0)  # Twisted's TLS path gathers a turn's writes
    thread.join(10)
    assert answers == [b"PING"]
    assert buffered == []
    client.close()
    ours.close()


class Lost(Protocol):
    """
    Keeps what it read, and why its connection ended.
    """

    def connectionMade(self):
        self.data = b""
        self.reason = None

    def dataReceived(self, data):
        self.data += data

    def connectionLost(self, reason):
        self.reason = reason


@pytest.mark.uses_internal("twisted.tls_direct_write")
@pytest.mark.uses_internal("twisted.tls_whole_reads")
def test_sealed_writes_leave_with_the_close_notify(pki):
    # The last writes before a close (the close frame) are encrypted but not
    # sent; the close_notify that closing writes goes with them, in one send.
    from wsmux._compat_twisted import tls_flush_sealed, tls_seal

    server, client, pump, _ = tls_pair(pki, Counter)
    received = client.wrappedProtocol
    sent = []
    real = server.transport.write
    server.transport.write = lambda data: sent.append(data) or real(data)
    # More than a record, or nothing to seal into: the caller's to send.
    assert not tls_seal(server, [b"x" * (2**14 + 1)])
    assert sent == []
    assert tls_seal(server, [b"last ", b"words"])
    pump.flush(advanceClock=False)
    assert sent == [] and received.data == b""
    server.loseConnection()
    tls_flush_sealed(server)  # nothing left: the close_notify took them
    assert len(sent) == 1
    pump.flush()
    assert received.data == b"last words"
    assert received.lost is not None and received.lost.check(ConnectionDone)
    assert not tls_seal(server, [b"too late"])


@pytest.mark.uses_internal("twisted.tls_direct_write")
@pytest.mark.uses_internal("twisted.tls_whole_reads")
def test_sealed_writes_wait_for_a_producer_then_go(pki):
    # A producer holds the TLS close back; what was sealed is sent anyway.
    from twisted.internet.interfaces import IPushProducer
    from zope.interface import implementer

    from wsmux._compat_twisted import tls_flush_sealed, tls_seal

    @implementer(IPushProducer)
    class Producer:
        def pauseProducing(self):
            pass

        def resumeProducing(self):
            pass

        def stopProducing(self):
            pass

    server, client, pump, _ = tls_pair(pki, Counter)
    received = client.wrappedProtocol
    server.registerProducer(Producer(), True)
    assert tls_seal(server, [b"sealed"])
    server.loseConnection()  # waits for the producer
    tls_flush_sealed(server)
    pump.flush()
    assert received.data == b"sealed"
    assert received.lost is None
    server.unregisterProducer()
    pump.flush()
    assert received.lost is not None


def wss_pair(pki, handler, monkeypatch, expect=b""):
    """
    A wsmux route tree (C{handler} on /ws) behind wsmux's TLS, and a TLS
    client that has upgraded to it, in memory; the pump, the server's TLS
    transport and the client's recorder.
    """
    import txaio
    from twisted.internet.testing import MemoryReactorClock

    from wsmux import Route, RouteTree
    from wsmux.site import WebSocketSite
    from wsmux.testing import upgrade_request

    reactor = MemoryReactorClock()
    monkeypatch.setattr(txaio.config, "loop", reactor)
    tree = RouteTree([Route("/ws", (handler,), {"ping_interval": 0})])
    site = WebSocketSite(tree, reactor=reactor)
    server, client, pump, _ = tls_pair(pki, None, site=site, clock=reactor)
    received = client.wrappedProtocol
    client.write(upgrade_request("/ws"))
    pump.flush()
    head, _, received.data = received.data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 ") and received.data == expect
    return pump, server, client, received


@pytest.mark.uses_internal("twisted.tls_direct_write")
@pytest.mark.uses_internal("twisted.tls_whole_reads")
@pytest.mark.parametrize("last_words", [0, 20000])
def test_a_wss_close_goes_in_one_send_with_the_close_notify(pki, monkeypatch, last_words):
    # The client sends a message and closes, in one read: the server's
    # answer and its close frame (when they fit in a record) leave with its
    # close_notify; more than a record goes first, the alert after.
    from autobahn.twisted.websocket import WebSocketServerProtocol

    from wsmux.testing import masked_frame

    class LastWords(WebSocketServerProtocol):
        def onMessage(self, payload, isBinary):
            self.sendMessage(b"w" * last_words, True)

    pump, server, client, received = wss_pair(pki, LastWords, monkeypatch)
    sent = []
    real = server.transport.write
    server.transport.write = lambda data: sent.append(data) or real(data)
    client.write(masked_frame(b"go") + masked_frame(b"\x03\xe8", opcode=8))
    pump.flush()
    answer = b"\x82\x00" if not last_words else b"\x82\x7e\x4e\x20" + b"w" * last_words
    assert received.data == answer + b"\x88\x02\x03\xe8"
    assert len(sent) == (2 if last_words else 1)
    assert received.lost is not None and received.lost.check(ConnectionDone)


@pytest.mark.uses_internal("twisted.tls_whole_reads")
@pytest.mark.parametrize("when", ["open", "message"])
def test_a_handler_closing_its_own_wss_transport_closes_it(pki, monkeypatch, when):
    # wsmux's connection is the TLS transport's producer (to watch its
    # buffer), and Twisted's TLS close waits for the producer to go: a
    # handler's own transport.loseConnection() must still close, at once.
    from autobahn.twisted.websocket import WebSocketServerProtocol

    from wsmux.testing import masked_frame

    class Leaves(WebSocketServerProtocol):
        def onOpen(self):
            if when == "open":
                self.sendMessage(b"bye")
                self.transport.loseConnection()

        def onMessage(self, payload, isBinary):
            self.sendMessage(b"bye")
            self.transport.loseConnection()

    bye = b"\x81\x03bye"
    pump, server, client, received = wss_pair(
        pki, Leaves, monkeypatch, bye if when == "open" else b""
    )
    if when == "message":
        assert received.lost is None
        client.write(masked_frame(b"go"))
        pump.flush()
    assert received.data == bye
    assert received.lost is not None and received.lost.check(ConnectionDone)


@pytest.mark.uses_internal("twisted.direct_send")
@pytest.mark.uses_internal("twisted.tls_whole_reads")
@pytest.mark.parametrize("direct", [True, False])
def test_a_tls_connection_closes_once_its_tls_close_is_done(pki, monkeypatch, direct):
    # Once both close_notify alerts have passed, Twisted asks the TCP
    # connection to close, which waits a turn for the socket to be
    # writable; with nothing left to send wsmux closes it in the read that
    # finished the TLS close.  (direct=False: Twisted's own way, for
    # comparison.)
    import select
    import socket
    import ssl
    import threading

    from twisted.internet.testing import MemoryReactorClock

    import wsmux._compat_twisted as seam

    if not direct:
        monkeypatch.setattr(seam, "DIRECT_SEND", False)
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    factory = tls_factory(SniContextMap(settings(pki)), Factory.forProtocol(Lost))
    reactor = MemoryReactorClock()
    factory._clock = reactor
    tls = factory.buildProtocol(None)
    port = type("Port", (), {"_realPortNumber": 0})()
    transport = seam.TCP_SERVER(ours, tls, ("127.0.0.1", 1), port, 1, reactor)
    tls.makeConnection(transport)

    context = ssl.create_default_context(cafile=pki.ca_file)
    client = context.wrap_socket(theirs, server_hostname="a.test", do_handshake_on_connect=False)
    client.settimeout(10)

    def talk():
        client.do_handshake()
        client.sendall(b"bye")
        client.unwrap()  # its close_notify, then the server's

    thread = threading.Thread(target=talk, daemon=True)
    thread.start()
    app = tls.wrappedProtocol
    for _ in range(200):  # bounded: the talk takes a few reads
        if not transport.connected:
            break
        if not thread.is_alive() and not select.select([ours], [], [], 0)[0]:
            break
        if select.select([ours], [], [], 0.05)[0]:
            transport.doRead()
        if transport.connected and (transport._tempDataLen or transport.dataBuffer):
            transport.doWrite()  # what Twisted's way left in the TCP buffer
        reactor.advance(0)
    thread.join(10)
    assert app.data == b"bye"
    if direct:
        # Closed in that read: no turn, no writability wait.
        assert not transport.connected and transport.disconnected
        assert app.reason.check(ConnectionDone)
    else:
        # Still open at the end of the read: the reactor closes it once the
        # socket is writable.
        assert transport.connected and transport.disconnecting
        assert app.reason is None
    client.close()
    ours.close()


@pytest.mark.uses_internal("twisted.tls_make_connection")
def test_a_tls_connection_is_given_its_transports_interfaces_once(pki, monkeypatch):
    # Twisted's makeConnection declares them one at a time, each replacing
    # the one before, then all at once; wsmux's transport declares them
    # once, and ends up providing exactly what Twisted's own does.
    from twisted.protocols import policies, tls
    from zope.interface import providedBy

    import wsmux._compat_twisted as seam

    declared = []
    for module in (tls, policies):
        real = module.directlyProvides
        monkeypatch.setattr(
            module,
            "directlyProvides",
            lambda target, *specs, real=real: declared.append(target) or real(target, *specs),
        )
    ours, client, pump, _ = tls_pair(pki, Counter)
    assert declared.count(ours) == 1
    client.write(b"still works")
    pump.flush()
    assert ours.wrappedProtocol.reads == [b"still works"]
    monkeypatch.setattr(seam, "TLS_MAKE_CONNECTION", False)
    twisteds, _, _, _ = tls_pair(pki, Counter)
    assert declared.count(twisteds) == len(list(providedBy(twisteds.transport))) + 1
    assert list(providedBy(ours)) == list(providedBy(twisteds))
    for server in (ours, twisteds):
        assert server.connected and server in server.factory.protocols


@pytest.mark.uses_internal("twisted.tls_whole_reads")
def test_tls_connections_share_their_interface_declarations(pki, monkeypatch):
    # Twisted's TLS transport declares, one at a time, each interface its
    # TCP transport provides, then all of them at once: zope.interface
    # keeps such declarations only while something uses them, so each new
    # connection built most of them again.  wsmux holds them: once the
    # first connection has made them, another builds none.
    import gc

    from zope.interface import declarations, providedBy

    from wsmux import _compat
    from wsmux._compat_twisted import _HELD_PROVIDES

    first, _, _, _ = tls_pair(pki, Counter)
    held = _HELD_PROVIDES[(type(first), providedBy(first.transport))]
    # The whole declaration; and the one-interface ones Twisted's own
    # makeConnection makes, when it runs (twisted.tls_make_connection off).
    one_at_a_time = 0 if _compat.enabled("twisted.tls_make_connection") else 1
    assert len(held) == one_at_a_time * len(list(providedBy(first.transport))) + 1
    del first
    gc.collect()
    built = []
    real = declarations.ProvidesClass
    monkeypatch.setattr(declarations, "ProvidesClass", lambda *a: built.append(a) or real(*a))
    second, client, pump, _ = tls_pair(pki, Counter)
    # (The client's are Twisted's own transport's, built each time.)
    assert [a for a in built if a[0] is type(second)] == []
    client.write(b"still works")
    pump.flush()
    assert second.wrappedProtocol.reads == [b"still works"]
