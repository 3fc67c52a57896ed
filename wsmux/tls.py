"""
TLS: certificates per host chosen by SNI, hardened contexts, reload, and
TLS and plain HTTP on one port.

L{SniContextMap} holds one hardened context per configured host name (exact
names and C{*.example.com} wildcards) plus a default.  Every certificate is
read and parsed when the map is loaded, never during a handshake, so an odd
server name (too long, C{../x}, non-ASCII) is only ever a failed dictionary
lookup.  L{SniContextMap.reload} re-reads every file: new handshakes get the
new certificates, open connections keep theirs, and a broken file keeps the
old certificates in service and logs which file is wrong.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Optional

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from OpenSSL import SSL, crypto
from twisted.internet import interfaces
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    AcceptableCiphers,
    CertificateOptions,
    TLSVersion,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from zope.interface import implementer

from wsmux._compat_http2 import ALPN_HTTP2, HTTP2
from wsmux._compat_twisted import tls_factory_protocol
from wsmux.logs import log

# Forward-secret suites only (TLS 1.3 suites always are).
FORWARD_SECRET_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20"
TLS_VERSIONS = {"1.2": TLSVersion.TLSv1_2, "1.3": TLSVersion.TLSv1_3}
MAX_SERVER_NAME = 255


class CertificateError(ValueError):
    """
    A certificate or key file cannot be used; the message names the file.
    """


@dataclass(frozen=True)
class HostCertificate:
    """
    Where one host's certificate lives.

    @ivar name: an exact host name or a wildcard such as C{*.example.com};
        empty for the default certificate.
    @ivar cert: the PEM file with the certificate chain (leaf first).
    @ivar key: the PEM file with the private key; the chain file when empty
        (a file holding the chain followed by the key).
    @ivar passphrase: the key's passphrase, if it is encrypted.
    """

    name: str
    cert: str
    key: str = ""
    passphrase: Optional[str] = None


@dataclass(frozen=True)
class TlsSettings:
    """
    The TLS part of the settings.

    @ivar default: the certificate for clients that send no server name or
        one no host entry matches.
    @ivar hosts: certificates by host name.
    @ivar directory: a directory of C{<hostname>.pem} files and a
        C{DEFAULT.pem}, each the chain followed by the key.
    @ivar strict: refuse unknown server names with an C{unrecognized_name}
        alert instead of serving the default certificate.
    @ivar min_version: C{"1.2"} or C{"1.3"}.
    @ivar http2: offer HTTP/2 (ALPN C{h2}) besides HTTP/1.1, when wsmux
        can serve it (the C{http2} extra).
    """

    default: Optional[HostCertificate] = None
    hosts: tuple[HostCertificate, ...] = ()
    directory: Optional[str] = None
    strict: bool = False
    min_version: str = "1.2"
    http2: bool = True

    def __post_init__(self) -> None:
        if self.min_version not in TLS_VERSIONS:
            raise ValueError(f"min_version must be one of {', '.join(TLS_VERSIONS)}")

    @property
    def configured(self) -> bool:
        return bool(self.default or self.hosts or self.directory)


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CertificateError(f"{path}: cannot read: {e.strerror}") from None


# Seconds a TLS session may be resumed for (OpenSSL's default for TLS 1.2).
SESSION_LIFETIME = 300


def load_certificate_options(
    entry: HostCertificate, min_version: str = "1.2", http2: bool = False
) -> CertificateOptions:
    """
    Parse one host's chain and key into hardened Twisted certificate options.

    @param http2: offer C{h2} in ALPN (when wsmux can serve HTTP/2).

    @raise CertificateError: naming the file that is missing or wrong.
    """
    chain_pem = _read(entry.cert)
    key_pem = _read(entry.key) if entry.key else chain_pem
    key_file = entry.key or entry.cert
    # Any failure to use a file names it: the crypto libraries raise more
    # than ValueError (UnsupportedAlgorithm for a curve they do not know,
    # OpenSSL errors, TypeError), and none of it may reach an operator as a
    # traceback, at start-up or on reload.
    try:
        chain = x509.load_pem_x509_certificates(chain_pem)
        leaf = crypto.X509.from_cryptography(chain[0])
        extra = [crypto.X509.from_cryptography(c) for c in chain[1:]]
    except Exception as e:
        raise CertificateError(f"{entry.cert}: no usable PEM certificate ({_why(e)})") from None
    passphrase = entry.passphrase.encode() if entry.passphrase else None
    try:
        key = serialization.load_pem_private_key(_only_key(key_pem), passphrase)
        pkey = crypto.PKey.from_cryptography_key(key)  # type: ignore[arg-type]
    except Exception as e:
        raise CertificateError(f"{key_file}: no usable PEM private key ({_why(e)})") from None
    if not _same_public_key(chain[0], key):
        raise CertificateError(f"{key_file}: the key does not match {entry.cert}")
    try:
        options = CertificateOptions(
            privateKey=pkey,
            certificate=leaf,
            extraCertChain=extra,
            raiseMinimumTo=TLS_VERSIONS[min_version],
            acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(FORWARD_SECRET_CIPHERS),
            acceptableProtocols=ALPN_HTTP2 if http2 and HTTP2 else [b"http/1.1"],
            enableSessions=True,
        )
        context = options.getContext()
    except Exception as e:
        raise CertificateError(
            f"{key_file}: cannot be used with {entry.cert} ({_why(e)})"
        ) from None
    try:
        context.check_privatekey()
    except SSL.Error as e:
        raise CertificateError(f"{key_file}: the key does not match {entry.cert} ({e})") from None
    # Resumed sessions come from OpenSSL's cache in this process (enableSessions
    # above; no session tickets, whose key would be a long-lived secret): at
    # most OpenSSL's 20,480 sessions, each kept this long.  OpenSSL resumes a
    # session under any of the process's server names; clients offer one only
    # for the name they made it with (RFC 8446 4.6.1).
    context.set_timeout(SESSION_LIFETIME)
    return options


def certificate_names(certificate: Any) -> frozenset[str]:
    """
    The DNS names C{certificate} (pyOpenSSL's X509) is for, lower-cased:
    those of its subjectAltName, or its common name when it has none, as
    clients check them (a wildcard stays C{*.parent}).
    """
    cert = certificate.to_cryptography()
    try:
        try:
            alternative = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            names = alternative.value.get_values_for_type(x509.DNSName)
        except x509.ExtensionNotFound:
            names = [
                str(attribute.value)
                for attribute in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
            ]
    except Exception:  # extensions the library will not parse: no names
        return frozenset()
    return frozenset(name.lower().rstrip(".") for name in names)


def _same_public_key(certificate: Any, key: Any) -> bool:
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        return bool(
            certificate.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
        )
    except Exception:  # a key type without a public half: let OpenSSL say
        return True


def _why(error: Exception) -> str:
    # One line about what went wrong, for a message that names the file.
    text = str(error).strip().splitlines()
    return f"{error.__class__.__name__}: {text[0]}" if text else error.__class__.__name__


def _only_key(pem: bytes) -> bytes:
    marker = pem.find(b"-----BEGIN ")
    while marker != -1:
        end = pem.find(b"-----", marker + 11)
        label = pem[marker + 11 : end]
        if label.endswith(b"PRIVATE KEY"):
            return pem[marker:]
        marker = pem.find(b"-----BEGIN ", end)
    return pem


def directory_entries(directory: str) -> list[HostCertificate]:
    """
    The certificates of a directory: C{DEFAULT.pem} and C{<hostname>.pem}.
    """
    try:
        names = sorted(os.listdir(directory))
    except OSError as e:
        raise CertificateError(f"{directory}: cannot list: {e.strerror}") from None
    entries = []
    skipped = []
    for filename in names:
        if not filename.endswith(".pem"):
            continue
        host = filename[: -len(".pem")]
        if host != "DEFAULT" and not servable_name(host):
            skipped.append(filename)
            log.warn(
                "TLS: skipped {file}: {name!r} is not a host name ({rule})",
                file=os.path.join(directory, filename),
                name=host,
                rule=HOST_NAME_RULE,
            )
            continue
        path = os.path.join(directory, filename)
        entries.append(HostCertificate("" if host == "DEFAULT" else host.lower(), path))
    if skipped and not entries:
        shown = ", ".join(repr(name) for name in skipped[:3]) + (
            ", ..." if len(skipped) > 3 else ""
        )
        raise CertificateError(
            f"{directory}: no certificate to serve: skipped {shown}, "
            f"whose names are not host names ({HOST_NAME_RULE})"
        )
    return entries


class _UnrecognizedName(Exception):
    """
    Raised in the server-name callback to abort with unrecognized_name.
    """


def _refuse_unrecognized_name() -> NoReturn:
    """
    Fail the TLS handshake in the server-name callback with
    unrecognized_name.

    pyOpenSSL hands an exception from that callback to C{sys.excepthook}
    and then fails the handshake with the alert OpenSSL sends for it,
    unrecognized_name: exactly the strict-mode answer.  The exception is
    expected, not an error to print: a hook set for this one exception
    keeps it out of stderr and puts the process's own hook back at once
    (any other exception that reaches it goes to that hook).
    """
    previous = sys.excepthook

    def once(kind: Any, value: Any, tb: Any) -> None:
        sys.excepthook = previous
        if kind is not _UnrecognizedName:
            previous(kind, value, tb)

    sys.excepthook = once
    raise _UnrecognizedName()


# What a (lower-cased, ASCII) host name is made of: DNS's letters, digits
# and hyphens, and the underscore some internal names carry (OpenSSL, Node
# and nginx accept it in SNI, and a certificate can be for such a name).
_DNS_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-._")


def normalize_server_name(raw: Optional[bytes]) -> Optional[str]:
    """
    A server name as sent in SNI, lower-cased, or L{None} if it is absent
    or not a plausible DNS name.
    """
    if not raw or len(raw) > MAX_SERVER_NAME:
        return None
    try:
        name = raw.decode("ascii").lower().rstrip(".")
    except UnicodeDecodeError:
        return None
    if not name or not _DNS_CHARACTERS.issuperset(name):
        return None
    return name


# What servable_name lets through, for error messages.
HOST_NAME_RULE = (
    "ASCII letters, digits, '-', '_' and '.', at most 255 bytes after an optional '*.' "
    "(an international name in its xn-- form), or an IP address"
)


def servable_name(name: str) -> bool:
    """
    Whether a configured host name is one wsmux can serve: a name an SNI
    server name can match (an exact name, or a wildcard such as
    C{*.example.com} whose names fit in a server name), or an IP address
    (which clients do not send in SNI: such an entry serves, as any first
    entry does, clients that send no name when no default is configured).
    """
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return True
    wildcard = name.startswith("*.")
    exact = (name[2:] if wildcard else name).rstrip(".")
    if not exact.isascii() or len(exact) > MAX_SERVER_NAME - (2 if wildcard else 0):
        return False
    return normalize_server_name(exact.encode("ascii")) is not None


@implementer(interfaces.IOpenSSLServerConnectionCreator)
class SniContextMap:
    """
    Server TLS contexts by host name, chosen by the SNI callback.

    Use it where Twisted wants a server context factory:
    C{TLSMemoryBIOFactory(contexts, False, site)}.

    @ivar handshakes: TLS handshakes started, by the host name served
        (C{"(default)"} for the default certificate).
    """

    def __init__(self, settings: TlsSettings) -> None:
        self.settings = settings
        self._default: Optional[CertificateOptions] = None
        self._exact: dict[str, CertificateOptions] = {}
        self._wildcard: dict[str, CertificateOptions] = {}
        self._default_names: frozenset[str] = frozenset()
        self.handshakes: dict[str, int] = {}
        self._install(self._load())

    def _entries(self) -> list[HostCertificate]:
        entries = []
        if self.settings.directory:
            entries += directory_entries(self.settings.directory)
        if self.settings.default:
            entries.append(self.settings.default)
        entries += list(self.settings.hosts)
        return entries

    def _load(
        self,
    ) -> tuple[
        Optional[CertificateOptions],
        dict[str, CertificateOptions],
        dict[str, CertificateOptions],
        frozenset[str],
    ]:
        default: Optional[CertificateOptions] = None
        exact: dict[str, CertificateOptions] = {}
        wildcard: dict[str, CertificateOptions] = {}
        default_names: frozenset[str] = frozenset()
        for entry in self._entries():
            if entry.name and not servable_name(entry.name):
                raise CertificateError(
                    f"{entry.name!r} is not a host name a client could ask for ({HOST_NAME_RULE})"
                )
            options = load_certificate_options(
                entry, self.settings.min_version, self.settings.http2
            )
            context = options.getContext()
            context.set_tlsext_servername_callback(self._server_name)
            name = entry.name.lower().rstrip(".")
            if not name:
                default = options
                default_names = certificate_names(options.certificate)
            elif name.startswith("*."):
                wildcard[name[2:]] = options
            else:
                exact[name] = options
        if default is None:
            if not (exact or wildcard):
                raise CertificateError("no certificate configured")
            # Without a default, the first host's certificate answers
            # clients that send no (or an unknown) server name.
            default = next(iter(exact.values()), None) or next(iter(wildcard.values()))
        return default, exact, wildcard, default_names

    def _install(self, loaded: Any) -> None:
        self._default, self._exact, self._wildcard, self._default_names = loaded

    def _default_serves(self, server_name: Optional[str]) -> bool:
        # Whether the default certificate is for this name: strict mode
        # refuses only the names no certificate is for.
        if server_name is None:
            return False
        names = self._default_names
        return server_name in names or "*." + server_name.partition(".")[2] in names

    def reload(self) -> bool:
        """
        Re-read every certificate.  New handshakes use the new ones; open
        connections keep theirs.

        @return: whether the new certificates are in service; on an error
            the old ones stay and the error is logged, naming the file.
        """
        try:
            loaded = self._load()
        except CertificateError as e:
            log.error("TLS reload failed, keeping the current certificates: {error}", error=str(e))
            return False
        except Exception as e:  # pragma: no cover - load_certificate_options names the file
            log.error("TLS reload failed, keeping the current certificates: {error}", error=_why(e))
            return False
        self._install(loaded)
        hosts = [*self._exact.values(), *self._wildcard.values()]
        separate_default = not any(options is self._default for options in hosts)
        log.info("TLS certificates reloaded ({n} certificate(s))", n=len(hosts) + separate_default)
        return True

    def options_for(self, server_name: Optional[str]) -> tuple[str, Optional[CertificateOptions]]:
        """
        The certificate options for a (normalized) server name.

        @return: the host label for metrics and the options, or L{None} as
            the options when the name is unknown.
        """
        if server_name is None:
            return "(default)", None
        options = self._exact.get(server_name)
        if options is not None:
            return server_name, options
        parent = server_name.partition(".")[2]
        options = self._wildcard.get(parent)
        if options is not None:
            return "*." + parent, options
        return "(default)", None

    def _server_name(self, connection: SSL.Connection) -> None:
        raw = connection.get_servername()
        name = normalize_server_name(raw)
        label, options = self.options_for(name)
        # Strict: a name we do not serve is refused; a client that sends no
        # name at all still gets the default certificate.
        if options is None and raw and self.settings.strict and not self._default_serves(name):
            log.info(
                "TLS handshake refused: unrecognized server name {name!r}",
                name=raw[:64].decode("ascii", "replace"),
            )
            _refuse_unrecognized_name()
        self.handshakes[label] = self.handshakes.get(label, 0) + 1
        if options is not None:
            connection.set_context(options.getContext())

    def serverConnectionForTLS(self, protocol: Any) -> SSL.Connection:
        """
        A new server-side TLS connection, starting on the default context.
        """
        assert self._default is not None
        return SSL.Connection(self._default.getContext(), None)


def tls_factory(contexts: SniContextMap, wrapped: Any) -> TLSMemoryBIOFactory:
    """
    Wrap C{wrapped} (the Site) in TLS using C{contexts}.
    """
    factory = TLSMemoryBIOFactory(contexts, False, wrapped)
    factory.protocol = tls_factory_protocol()
    return factory


class _Sniffer(Protocol):
    """
    Looks at the first byte of a connection and continues it as TLS (a
    handshake record starts with 0x16) or as plain HTTP.
    """

    def __init__(self, factory: SniffingFactory, addr: Any) -> None:
        self.sniffing = factory
        self.addr = addr
        self._timeout: Any = None

    def connectionMade(self) -> None:
        clock = self.sniffing.clock
        if self.sniffing.timeout:
            self._timeout = clock.callLater(self.sniffing.timeout, self._too_slow)

    def _too_slow(self) -> None:
        self._timeout = None
        log.info("dropped a connection that sent nothing within {t}s", t=self.sniffing.timeout)
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()
        factory = self.sniffing.tls if data[:1] == b"\x16" else self.sniffing.plain
        protocol = factory.buildProtocol(self.addr)
        transport = self.transport
        assert transport is not None and protocol is not None
        transport.protocol = protocol  # type: ignore[attr-defined]
        protocol.makeConnection(transport)
        protocol.dataReceived(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self._timeout is not None and self._timeout.active():
            self._timeout.cancel()


class SniffingFactory(Factory):
    """
    TLS and plain connections on one port: the first byte decides.

    @ivar timeout: seconds a client has to send its first byte.
    """

    def __init__(self, tls: Any, plain: Any, timeout: float = 10.0, clock: Any = None) -> None:
        self.tls = tls
        self.plain = plain
        self.timeout = timeout
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock

    def doStart(self) -> None:
        self.tls.doStart()
        self.plain.doStart()
        super().doStart()

    def doStop(self) -> None:
        self.tls.doStop()
        self.plain.doStop()
        super().doStop()

    def buildProtocol(self, addr: Any) -> Protocol:
        return _Sniffer(self, addr)
