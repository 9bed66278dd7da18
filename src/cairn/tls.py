"""A local development CA and a server certificate for the hosts cairn serves.

Terraform always fetches ``https://<host>/.well-known/terraform.json``, so cairn serves HTTPS
even on a laptop. ``ca-bundle.pem`` (the system CAs plus this CA) is what ``SSL_CERT_FILE``
should point at: Go's TLS, Python's ssl and curl all honour it.

A shell that trusts this CA must not be exposed by it, so the CA can vouch for nothing else:

- it is **name-constrained** (X.509 NameConstraints, critical): its permitted subtrees are
  exactly the server certificate's names (``localhost``, the public URL's host, 127.0.0.1 and
  ::1), so even a certificate made with its key for another host fails verification (OpenSSL,
  Go and ``cryptography`` enforce the constraints);
- its **key is never stored**: it signs the server certificate and is dropped. Nobody who
  later reads the data dir (a backup, a careless copy) can issue anything with it. The price:
  a new server certificate needs a new CA, so both are made together — at the first start,
  when the served names change, and when the server certificate has less than 30 days left.
  ``ca-bundle.pem`` is rewritten in place, so ``SSL_CERT_FILE`` keeps working; a client that
  pinned the old ``ca.pem`` must take the new one;
- it is **short-lived**: 90 days (the server certificate ends an hour earlier), so a copied
  CA certificate stops being trusted on its own.

Data dirs made by older versions (a 10-year CA without constraints, ``ca-key.pem``) are
replaced at the next start and the old CA key deleted.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_LIFETIME = timedelta(days=90)
RENEW_BEFORE = timedelta(days=30)  # make new ones at start when less than this is left
_LEGACY_CA_KEY = "ca-key.pem"


@dataclass(frozen=True)
class DevTls:
    cert: Path
    key: Path
    ca: Path
    bundle: Path


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def system_ca_pem() -> bytes:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate).read_bytes()
    try:
        import certifi

        return Path(certifi.where()).read_bytes()
    except ImportError:
        return b""


def ensure_dev_tls(tls_dir: Path, hostnames: list[str], *, now: datetime | None = None) -> DevTls:
    """The development CA and server certificate for ``hostnames`` in ``tls_dir``, made anew
    when missing, expiring within 30 days, unconstrained (older versions) or made for other
    names (see the module docstring)."""
    tls_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(tls_dir, 0o700)
    ca_path, cert_path = tls_dir / "ca.pem", tls_dir / "server.pem"
    key_path, bundle_path = tls_dir / "server-key.pem", tls_dir / "ca-bundle.pem"
    now = now or datetime.now(UTC)

    if not _current(ca_path, cert_path, key_path, hostnames, now):
        issued = issue(hostnames, now)
        _write_private(key_path, _key_pem(issued.key))
        _write_private(cert_path, issued.cert.public_bytes(serialization.Encoding.PEM))
        _write_private(ca_path, issued.ca.public_bytes(serialization.Encoding.PEM))
    (tls_dir / _LEGACY_CA_KEY).unlink(missing_ok=True)

    bundle = system_ca_pem().rstrip() + b"\n" + ca_path.read_bytes()
    if not bundle_path.exists() or bundle_path.read_bytes() != bundle:
        _write_private(bundle_path, bundle)
    return DevTls(cert=cert_path, key=key_path, ca=ca_path, bundle=bundle_path)


@dataclass(frozen=True)
class Issued:
    """A CA certificate and the server certificate it signed (with the server's key); the
    CA's key is ``ca_key`` only for whoever called ``issue`` (tests): it is never stored."""

    ca: x509.Certificate
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    ca_key: ec.EllipticCurvePrivateKey


def general_names(hostnames: list[str]) -> list[x509.GeneralName]:
    """``hostnames`` as certificate names: IP addresses as such, the rest as DNS names."""
    names: list[x509.GeneralName] = []
    for h in dict.fromkeys(hostnames):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    return names


def _permitted(names: list[x509.GeneralName]) -> list[x509.GeneralName]:
    """NameConstraints subtrees for exactly ``names`` (an IP address as a single-address
    network; a DNS name also permits its subdomains, RFC 5280 §4.2.1.10, which the server
    certificate never holds)."""
    permitted: list[x509.GeneralName] = []
    for name in names:
        if isinstance(name, x509.IPAddress):
            permitted.append(x509.IPAddress(ipaddress.ip_network(name.value)))
        else:
            permitted.append(name)
    return permitted


def issue(hostnames: list[str], now: datetime) -> Issued:
    """A new CA constrained to ``hostnames`` and a server certificate for them."""
    names = general_names(hostnames)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "cairn development CA"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cairn (local)"),
        ]
    )
    ca_until = now + CA_LIFETIME
    ca = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(ca_until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.NameConstraints(permitted_subtrees=_permitted(names), excluded_subtrees=None),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(ca_until - timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return Issued(ca=ca, cert=cert, key=key, ca_key=ca_key)


def _current(
    ca_path: Path, cert_path: Path, key_path: Path, hostnames: list[str], now: datetime
) -> bool:
    """Whether the stored CA and server certificate can stay: both present, the CA
    name-constrained to exactly ``hostnames``, the server certificate signed by it, for those
    names, with 30 days or more left."""
    if not (ca_path.exists() and cert_path.exists() and key_path.exists()):
        return False
    try:
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, x509.ExtensionNotFound, InvalidSignature):
        return False
    wanted = general_names(hostnames)
    return (
        constraints.critical
        and set(constraints.value.permitted_subtrees or ()) == set(_permitted(wanted))
        and set(san) == set(wanted)
        and min(cert.not_valid_after_utc, ca.not_valid_after_utc) - now >= RENEW_BEFORE
        and ca.not_valid_after_utc - ca.not_valid_before_utc <= CA_LIFETIME + timedelta(hours=1)
    )
