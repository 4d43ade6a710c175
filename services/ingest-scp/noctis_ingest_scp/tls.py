"""DICOM TLS: the SSL contexts of the TLS listener and of outbound TLS associations.

Noctis follows the BCP 195 RFC 8996 TLS Secure Transport Connection Profile of
PS3.15 Annex B: TLS 1.2 or newer and never an older version, with TLS 1.2 limited to
ECDHE key exchange and AES-GCM (TLS_ECDHE_RSA/ECDSA_WITH_AES_128/256_GCM_SHA256/384).
TLS 1.3 uses OpenSSL's default TLS 1.3 suites, which are all AEAD. A peer that offers
only older versions or other TLS 1.2 suites fails the handshake.

The listener on ``NOCTIS_DIMSE_TLS_PORT`` presents ``NOCTIS_DIMSE_TLS_CERTIFICATE_FILE``.
When ``NOCTIS_DIMSE_TLS_CA_FILE`` is set, every client must present a certificate that
one of those CAs signed (mutual TLS). Without it, clients stay anonymous, so only the
AE title identifies them.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from noctis_common.settings import Settings

# OpenSSL cipher string for the TLS 1.2 suites of the profile above.
TLS12_CIPHERS = "ECDHE+AESGCM"


class TLSConfigError(ValueError):
    """The TLS settings are incomplete or name files that cannot be used."""


class _DeferredHandshakeContext(ssl.SSLContext):
    """A server context whose sockets shake hands on first read, not at accept().

    pynetdicom 3.0 wraps each accepted socket in its listener thread. With the default
    ``do_handshake_on_connect=True`` a client that connects and sends nothing would
    hold that thread, and with it every later TLS connection. Deferring the handshake
    moves it into the association's own thread, under its network timeout.
    """

    def wrap_socket(  # type: ignore[override]
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        **options: Any,
    ) -> ssl.SSLSocket:
        return super().wrap_socket(
            sock, server_side=server_side, do_handshake_on_connect=False, **options
        )


def _apply_profile(context: ssl.SSLContext) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION


def _load_certificate(context: ssl.SSLContext, settings: Settings, required: bool) -> None:
    certificate = settings.dimse_tls_certificate_file
    private_key = settings.dimse_tls_private_key_file
    if certificate is None and private_key is None and not required:
        return
    if certificate is None or private_key is None:
        raise TLSConfigError(
            "DICOM TLS needs both NOCTIS_DIMSE_TLS_CERTIFICATE_FILE and "
            "NOCTIS_DIMSE_TLS_PRIVATE_KEY_FILE; set the missing one"
        )
    try:
        context.load_cert_chain(certificate, private_key)
    except (OSError, ssl.SSLError) as error:
        raise TLSConfigError(
            f"cannot load the TLS certificate {certificate} with key {private_key}: {error}"
        ) from error


def _load_ca_file(context: ssl.SSLContext, settings: Settings) -> None:
    ca_file = settings.dimse_tls_ca_file
    if ca_file is None:
        return
    try:
        context.load_verify_locations(cafile=ca_file)
    except (OSError, ssl.SSLError) as error:
        raise TLSConfigError(
            f"cannot load the CA certificates of NOCTIS_DIMSE_TLS_CA_FILE {ca_file}: {error}"
        ) from error


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """Build the TLS listener's context, or return ``None`` when the TLS port is 0.

    Raises :class:`TLSConfigError` when TLS is on but the certificate, key or CA file
    cannot be loaded.
    """
    if settings.dimse_tls_port == 0:
        return None
    context = _DeferredHandshakeContext(ssl.PROTOCOL_TLS_SERVER)
    _apply_profile(context)
    _load_certificate(context, settings, required=True)
    if settings.dimse_tls_ca_file is not None:
        _load_ca_file(context, settings)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(settings: Settings) -> ssl.SSLContext:
    """Build the context for associations Noctis opens to peers marked ``"tls": true``.

    The peer's certificate is verified against ``NOCTIS_DIMSE_TLS_CA_FILE`` (or the
    system's CAs when it is unset) and must name the peer's host. Noctis presents its
    own certificate when one is configured, for peers that require client certificates.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    _apply_profile(context)
    if settings.dimse_tls_ca_file is not None:
        _load_ca_file(context, settings)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    _load_certificate(context, settings, required=False)
    return context
