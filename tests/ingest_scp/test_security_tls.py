"""DICOM TLS: the TLS listener with dcmtk and pynetdicom clients, mutual TLS, the profile."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from noctis_common.settings import Settings
from noctis_ingest_scp.presentation import VERIFICATION_SOP_CLASS_UID
from noctis_ingest_scp.tls import TLSConfigError, server_ssl_context
from tests.ingest_scp.certificates import CertificateSet, KeyPair, make_test_pki
from tests.ingest_scp.helpers import RunningSCP, run_dcmtk, running_scp
from tests.support import free_port, make_dataset


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> CertificateSet:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def tls_overrides(pki: CertificateSet, *, mutual: bool) -> dict[str, object]:
    return {
        "dimse_tls_port": free_port(),
        "dimse_tls_certificate_file": pki.server.certificate,
        "dimse_tls_private_key_file": pki.server.private_key,
        "dimse_tls_ca_file": pki.ca_certificate if mutual else None,
    }


@pytest.fixture
def mutual_tls_scp(sqlite_settings: Settings, pki: CertificateSet) -> Iterator[RunningSCP]:
    """An SCP whose TLS listener requires client certificates signed by the test CA."""
    with running_scp(sqlite_settings, **tls_overrides(pki, mutual=True)) as running:
        yield running


def tls_port(running: RunningSCP) -> int:
    port = running.scp.tls_port
    assert port is not None
    return port


def client_context(pki: CertificateSet, client: KeyPair | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=pki.ca_certificate)
    if client is not None:
        context.load_cert_chain(client.certificate, client.private_key)
    return context


def tls_echo_status(running: RunningSCP, context: ssl.SSLContext) -> int | None:
    """Run one C-ECHO over TLS with pynetdicom; return its status, None without association."""
    requestor = AE(ae_title="MODALITY")
    requestor.add_requested_context(VERIFICATION_SOP_CLASS_UID)
    association = requestor.associate(
        "127.0.0.1", tls_port(running), ae_title="NOCTIS", tls_args=(context, "127.0.0.1")
    )
    if not association.is_established:
        return None
    try:
        return int(association.send_c_echo().Status)
    finally:
        association.release()


def handshake(
    port: int,
    pki: CertificateSet,
    *,
    ciphers: str | None = None,
    maximum: ssl.TLSVersion | None = None,
) -> str:
    """Complete a TLS handshake with a client certificate; return the negotiated version."""
    context = client_context(pki, pki.client)
    if ciphers is not None:
        context.set_ciphers(ciphers)
    if maximum is not None:
        context.maximum_version = maximum
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as wrapped,
    ):
        return str(wrapped.version())


@pytest.mark.dcmtk
def test_echoscu_over_mutual_tls(mutual_tls_scp: RunningSCP, pki: CertificateSet) -> None:
    result = run_dcmtk(
        "echoscu", "-v", "-aec", "NOCTIS",
        "+tls", pki.client.private_key, pki.client.certificate,
        "+cf", pki.ca_certificate,
        "127.0.0.1", tls_port(mutual_tls_scp),
    )  # fmt: skip

    assert result.returncode == 0, result.stdout
    assert "Received Echo Response (Success)" in result.stdout


@pytest.mark.dcmtk
def test_storescu_over_tls(mutual_tls_scp: RunningSCP, pki: CertificateSet, tmp_path: Path) -> None:
    dataset = make_dataset()
    path = tmp_path / "instance.dcm"
    dataset.save_as(path, enforce_file_format=True)

    result = run_dcmtk(
        "storescu", "-aec", "NOCTIS",
        "+tls", pki.client.private_key, pki.client.certificate,
        "+cf", pki.ca_certificate,
        "127.0.0.1", tls_port(mutual_tls_scp), path,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout
    assert mutual_tls_scp.instance(dataset.SOPInstanceUID) is not None


@pytest.mark.dcmtk
def test_client_without_certificate_refused(
    mutual_tls_scp: RunningSCP, pki: CertificateSet
) -> None:
    result = run_dcmtk(
        "echoscu", "-aec", "NOCTIS", "+tla", "+cf", pki.ca_certificate,
        "127.0.0.1", tls_port(mutual_tls_scp),
    )  # fmt: skip

    assert result.returncode != 0
    assert "Received Echo Response" not in result.stdout


def test_pynetdicom_echo_over_tls(mutual_tls_scp: RunningSCP, pki: CertificateSet) -> None:
    assert tls_echo_status(mutual_tls_scp, client_context(pki, pki.client)) == 0x0000


def test_untrusted_client_certificate_refused(
    mutual_tls_scp: RunningSCP, pki: CertificateSet
) -> None:
    status = tls_echo_status(mutual_tls_scp, client_context(pki, pki.untrusted_client))

    assert status is None


def test_anonymous_client_accepted_without_ca(
    sqlite_settings: Settings, pki: CertificateSet
) -> None:
    with running_scp(sqlite_settings, **tls_overrides(pki, mutual=False)) as running:
        assert tls_echo_status(running, client_context(pki, None)) == 0x0000


def test_plain_port_still_serves(mutual_tls_scp: RunningSCP) -> None:
    requestor = AE(ae_title="MODALITY")
    requestor.add_requested_context(VERIFICATION_SOP_CLASS_UID)
    association = requestor.associate("127.0.0.1", mutual_tls_scp.port, ae_title="NOCTIS")
    try:
        assert association.send_c_echo().Status == 0x0000
    finally:
        association.release()


def test_tls12_with_profile_cipher_accepted(
    mutual_tls_scp: RunningSCP, pki: CertificateSet
) -> None:
    version = handshake(
        tls_port(mutual_tls_scp),
        pki,
        ciphers="ECDHE-RSA-AES128-GCM-SHA256",
        maximum=ssl.TLSVersion.TLSv1_2,
    )

    assert version == "TLSv1.2"


def test_tls12_other_ciphers_refused(mutual_tls_scp: RunningSCP, pki: CertificateSet) -> None:
    # Python's default server context accepts both suites; the BCP 195 profile does not.
    with pytest.raises(ssl.SSLError):
        handshake(
            tls_port(mutual_tls_scp),
            pki,
            ciphers="ECDHE-RSA-AES128-SHA256:ECDHE-RSA-CHACHA20-POLY1305",
            maximum=ssl.TLSVersion.TLSv1_2,
        )


def test_tls13_accepted(mutual_tls_scp: RunningSCP, pki: CertificateSet) -> None:
    assert handshake(tls_port(mutual_tls_scp), pki) == "TLSv1.3"


def test_silent_connection_does_not_block_tls(
    mutual_tls_scp: RunningSCP, pki: CertificateSet
) -> None:
    with socket.create_connection(("127.0.0.1", tls_port(mutual_tls_scp))):
        # This connection never sends a ClientHello; others must still get through.
        assert tls_echo_status(mutual_tls_scp, client_context(pki, pki.client)) == 0x0000


def test_tls_without_certificate_is_config_error(pki: CertificateSet) -> None:
    settings = Settings(
        dimse_tls_port=free_port(), dimse_tls_private_key_file=pki.server.private_key
    )

    with pytest.raises(TLSConfigError, match="NOCTIS_DIMSE_TLS_CERTIFICATE_FILE"):
        server_ssl_context(settings)


def test_unreadable_ca_file_is_config_error(pki: CertificateSet, tmp_path: Path) -> None:
    settings = Settings(
        dimse_tls_port=free_port(),
        dimse_tls_certificate_file=pki.server.certificate,
        dimse_tls_private_key_file=pki.server.private_key,
        dimse_tls_ca_file=tmp_path / "missing-ca.crt",
    )

    with pytest.raises(TLSConfigError, match="NOCTIS_DIMSE_TLS_CA_FILE"):
        server_ssl_context(settings)


def test_tls_off_by_default() -> None:
    assert server_ssl_context(Settings()) is None
