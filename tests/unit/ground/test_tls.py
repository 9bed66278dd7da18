"""The development CA (finding L9): name-constrained to exactly the served hosts, short-lived,
its key never stored; a certificate it signs for another host fails verification in OpenSSL
and in `cryptography`'s verifier, while the server certificate verifies."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from cairn.tls import ensure_dev_tls, issue

NAMES = ["localhost", "127.0.0.1", "::1"]
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_dev_ca_is_name_constrained_short_lived_and_keyless(tmp_path: Path) -> None:
    dev = ensure_dev_tls(tmp_path / "tls", ["cairn.example.test", *NAMES])
    ca = _cert(dev.ca)
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical
    assert set(constraints.value.permitted_subtrees or ()) == {
        x509.DNSName("cairn.example.test"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_network("127.0.0.1/32")),
        x509.IPAddress(ipaddress.ip_network("::1/128")),
    }
    assert constraints.value.excluded_subtrees is None
    assert ca.not_valid_after_utc - ca.not_valid_before_utc <= timedelta(days=91)
    server = _cert(dev.cert)
    assert server.not_valid_after_utc <= ca.not_valid_after_utc
    # Nothing in the directory can sign another certificate.
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == [
        "ca-bundle.pem",
        "ca.pem",
        "server-key.pem",
        "server.pem",
    ]
    assert b"PRIVATE KEY" not in dev.ca.read_bytes() + dev.bundle.read_bytes()


def test_kept_while_valid_remade_when_names_change_or_expiry_nears(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    first = ensure_dev_tls(tls, NAMES, now=NOW).ca.read_bytes()
    assert ensure_dev_tls(tls, NAMES, now=NOW + timedelta(days=59)).ca.read_bytes() == first
    later = ensure_dev_tls(tls, NAMES, now=NOW + timedelta(days=61)).ca.read_bytes()
    assert later != first  # fewer than 30 days were left
    renamed = ensure_dev_tls(tls, ["other.test", *NAMES], now=NOW + timedelta(days=61))
    assert renamed.ca.read_bytes() != later
    san = _cert(renamed.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert x509.DNSName("other.test") in san.value
    assert renamed.ca.read_text().strip() in renamed.bundle.read_text()


def test_an_unconstrained_ca_of_an_older_version_is_replaced_and_its_key_deleted(
    tmp_path: Path,
) -> None:
    tls = tmp_path / "tls"
    tls.mkdir()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cairn development CA")])
    old = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    (tls / "ca.pem").write_bytes(old.public_bytes(serialization.Encoding.PEM))
    (tls / "ca-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    dev = ensure_dev_tls(tls, NAMES, now=NOW)
    assert not (tls / "ca-key.pem").exists()
    assert _cert(dev.ca) != old
    _cert(dev.ca).extensions.get_extension_for_class(x509.NameConstraints)


def _foreign_leaf(ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate) -> x509.Certificate:
    """What someone holding the CA key would make: a certificate for another host."""
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bank.example")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=1))
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("bank.example")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )


def test_a_certificate_for_another_host_fails_verification(tmp_path: Path) -> None:
    issued = issue(NAMES, NOW)
    foreign = _foreign_leaf(issued.ca_key, issued.ca)
    store = Store([issued.ca])

    def verify(leaf: x509.Certificate, host: str) -> None:
        name = x509.DNSName(host)
        verifier = PolicyBuilder().store(store).time(NOW).build_server_verifier(name)
        verifier.verify(leaf, [])

    verify(issued.cert, "localhost")
    with pytest.raises(VerificationError):
        verify(foreign, "bank.example")

    openssl = shutil.which("openssl")
    if openssl is None:  # pragma: no cover - Debian images ship it
        return
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(issued.ca.public_bytes(pem))
    (tmp_path / "good.pem").write_bytes(issued.cert.public_bytes(pem))
    (tmp_path / "bad.pem").write_bytes(foreign.public_bytes(pem))
    at = ["-attime", str(int(NOW.timestamp()))]
    good = subprocess.run(
        [openssl, "verify", *at, "-CAfile", "ca.pem", "good.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert good.returncode == 0, good.stdout + good.stderr
    bad = subprocess.run(
        [openssl, "verify", *at, "-CAfile", "ca.pem", "bad.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode != 0
    assert "permitted subtree violation" in bad.stdout + bad.stderr
