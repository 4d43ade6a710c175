"""Throwaway X.509 certificates for the DICOM TLS tests, made with ``cryptography``."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

RSA_KEY_BITS = 2048
VALIDITY = datetime.timedelta(days=2)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate file and its unencrypted PEM private key file."""

    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class CertificateSet:
    """A CA, a server certificate for 127.0.0.1 and client certificates."""

    ca_certificate: Path
    server: KeyPair
    client: KeyPair
    # Signed by a second CA that the server does not trust.
    untrusted_client: KeyPair


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def _write_certificate(certificate: x509.Certificate, path: Path) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def _make_ca(common_name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _issue(
    folder: Path,
    stem: str,
    ca: tuple[rsa.RSAPrivateKey, x509.Certificate],
    common_name: str,
    server: bool,
) -> KeyPair:
    ca_key, ca_certificate = ca
    key = _new_key()
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    certificate = builder.sign(ca_key, hashes.SHA256())
    pair = KeyPair(certificate=folder / f"{stem}.crt", private_key=folder / f"{stem}.key")
    _write_certificate(certificate, pair.certificate)
    _write_key(key, pair.private_key)
    return pair


def make_test_pki(folder: Path) -> CertificateSet:
    """Write a CA, a server certificate and client certificates into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca = _make_ca("Noctis test CA")
    other_ca = _make_ca("Untrusted test CA")
    ca_certificate = folder / "ca.crt"
    _write_certificate(ca[1], ca_certificate)
    return CertificateSet(
        ca_certificate=ca_certificate,
        server=_issue(folder, "server", ca, "localhost", server=True),
        client=_issue(folder, "client", ca, "MODALITY", server=False),
        untrusted_client=_issue(folder, "untrusted", other_ca, "STRANGER", server=False),
    )
