"""TLS for `invigil serve`: a certificate from files, or a self-signed one made in memory.

Browsers only give camera and microphone to pages on https (or localhost), so any
exam reached over a network needs TLS. The self-signed key never touches a disk:
it lives in an anonymous memory file (memfd) just long enough for OpenSSL to read it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SELF_SIGNED_DAYS = 30
ALWAYS_NAMED = ("localhost", "127.0.0.1", "::1")
# Addresses a server binds to but nobody connects to: no use in a certificate.
UNSPECIFIED = frozenset({"0.0.0.0", "::", ""})


@dataclass(frozen=True)
class TlsSetup:
    """What `server_ssl_context` made.

    `context` is the server-side SSLContext to hand to aiohttp. `certificate_pem`
    is the server certificate (the first of the chain for files), for clients and
    tests to trust. `fingerprint_sha256` is its SHA-256 fingerprint as browsers
    show it (`AB:CD:…`), for the operator to compare when a browser warns about a
    self-signed certificate.
    """

    context: ssl.SSLContext
    certificate_pem: bytes
    fingerprint_sha256: str


def server_ssl_context(
    cert: str | None, key: str | None, self_signed: bool, hostnames: list[str]
) -> TlsSetup | None:
    """TLS for the server: None for plain http, else a `TlsSetup`.

    With `cert` and `key` (PEM file paths) the files are loaded as they are. With
    `self_signed`, a fresh ECDSA P-256 certificate valid for `SELF_SIGNED_DAYS` is
    made for `hostnames` plus localhost, 127.0.0.1 and ::1. Raises ValueError for
    a contradictory or incomplete choice.
    """
    if self_signed and (cert or key):
        raise ValueError("choose either --self-signed or --tls-cert/--tls-key, not both")
    if bool(cert) != bool(key):
        raise ValueError("--tls-cert and --tls-key go together")
    if self_signed:
        certificate_pem, key_pem = self_signed_certificate(hostnames)
        context = _server_context()
        _load_from_memory(context, key_pem + certificate_pem)
        return TlsSetup(context, certificate_pem, fingerprint_sha256(certificate_pem))
    if cert and key:
        context = _server_context()
        context.load_cert_chain(cert, key)
        with open(cert, "rb") as chain:
            certificate_pem = _first_certificate(chain.read())
        return TlsSetup(context, certificate_pem, fingerprint_sha256(certificate_pem))
    return None


def self_signed_certificate(hostnames: Iterable[str]) -> tuple[bytes, bytes]:
    """A new self-signed certificate and its unencrypted private key, both PEM, in memory only."""
    names = _subject_names(hostnames)
    private_key = ec.generate_private_key(ec.SECP256R1())
    public_key = private_key.public_key()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, _common_name(names)),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Invigil (self-signed)"),
        ]
    )
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        # A little slack for clients whose clocks run slightly behind.
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(private_key, hashes.SHA256())
    )
    certificate_pem = certificate.public_bytes(serialization.Encoding.PEM)
    key_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return certificate_pem, key_pem


def fingerprint_sha256(certificate_pem: bytes) -> str:
    """The SHA-256 fingerprint of a PEM certificate, as `AB:CD:…` (how browsers show it)."""
    certificate = x509.load_pem_x509_certificate(certificate_pem)
    return certificate.fingerprint(hashes.SHA256()).hex(":").upper()


def _server_context() -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _load_from_memory(context: ssl.SSLContext, key_and_chain_pem: bytes) -> None:
    """Load a PEM key plus chain through an anonymous memory file: nothing reaches a disk."""
    fd = os.memfd_create("invigil-tls", os.MFD_CLOEXEC)
    try:
        view = memoryview(key_and_chain_pem)
        while view:
            view = view[os.write(fd, view) :]
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _subject_names(hostnames: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    seen: set[str] = set()
    for raw in [*hostnames, *ALWAYS_NAMED]:
        hostname = raw.strip().strip("[]").lower()
        if hostname in UNSPECIFIED or hostname in seen:
            continue
        seen.add(hostname)
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(hostname)))
        except ValueError:
            names.append(x509.DNSName(hostname))
    return names


def _common_name(names: list[x509.GeneralName]) -> str:
    # The first name given by the operator, else localhost; CN is at most 64 characters.
    return str(names[0].value)[:64]


def _first_certificate(chain_pem: bytes) -> bytes:
    end = b"-----END CERTIFICATE-----"
    start = chain_pem.find(b"-----BEGIN CERTIFICATE-----")
    stop = chain_pem.find(end, start)
    if start < 0 or stop < 0:
        raise ValueError("--tls-cert holds no PEM certificate")
    return chain_pem[start : stop + len(end)] + b"\n"
