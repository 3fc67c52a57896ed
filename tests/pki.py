"""
Certificates made for the tests: a CA, a default certificate, two host
certificates and a wildcard one, written as PEM files.
"""

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

HOSTS = ("default.test", "a.test", "b.test", "*.wild.test")


@dataclass
class Pki:
    """
    Where the test certificates are.

    @ivar ca: the trustme CA (its C{cert_pem} verifies every certificate).
    @ivar directory: a certificate directory: C{<host>.pem} and C{DEFAULT.pem}.
    @ivar files: per host, (chain file, key file).
    """

    ca: trustme.CA
    root: Path
    directory: Path
    files: dict

    @property
    def ca_file(self):
        return str(self.root / "ca.pem")

    def issue(self, host, common_name=None):
        """
        A new certificate for C{host}, as (chain PEM, key PEM) bytes.
        """
        cert = self.ca.issue_cert(host, common_name=common_name or host)
        chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
        return chain, cert.private_key_pem.bytes()


def make_pki(root):
    root = Path(root)
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    directory = root / "certs"
    directory.mkdir()
    pki = Pki(ca, root, directory, {})
    for host in HOSTS:
        chain, key = pki.issue(host)
        stem = host.replace("*", "_wildcard")
        chain_file, key_file = root / f"{stem}.crt", root / f"{stem}.key"
        chain_file.write_bytes(chain)
        key_file.write_bytes(key)
        pki.files[host] = (str(chain_file), str(key_file))
        name = "DEFAULT" if host == "default.test" else host
        (directory / f"{name}.pem").write_bytes(chain + key)
    return pki


# A private key on secp112r1, an EC curve the crypto library cannot load
# (made with: openssl ecparam -name secp112r1 -genkey -noout).
UNSUPPORTED_CURVE_KEY = b"""\
-----BEGIN EC PRIVATE KEY-----
MD4CAQEEDssw27WfAwd0MHHRQwDsoAcGBSuBBAAGoSADHgAEsbyljBLBmT3yqOLc
AcGOMafvTljp9Tw5A37LyA==
-----END EC PRIVATE KEY-----
"""


def sync_client_context(ca_file):
    """
    A client context for the C{websockets} sync client over wss://, which
    stops at TLS 1.2.

    That client reads in a thread of its own while the caller writes, on
    one SSL object.  With TLS 1.3 the server's session tickets arrive just
    after the handshake, while the client writes its opening request: here
    about one connection in a hundred never sent the request (the server
    read the client's Finished, then nothing until its 408), against
    websockets' own server as against wsmux, and none in 500 with TLS 1.2
    (docs/tls.rst, "Clients").  wsmux's TLS 1.3 is tested with raw TLS
    sockets, openssl s_client, the asyncio clients and Chromium.
    """
    context = ssl.create_default_context(cafile=ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context
