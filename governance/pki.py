"""A local test PKI for C2PA signing: root CA -> signing certificate.

The C2PA validator on this machine accepts a signing certificate only when it carries extended key
usage emailProtection, a critical KeyUsage of digitalSignature alone, an AuthorityKeyIdentifier, and
is issued by a CA (a self-signed leaf is refused). This module makes exactly that, for development.
Production certificates and trust anchors are configured by path instead.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOT_FOR_PRODUCTION = "LOCAL TEST PKI - NOT FOR PRODUCTION"


@dataclass(frozen=True)
class LocalPki:
    root_cert: Path
    root_key: Path
    signing_cert: Path
    signing_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "idavatar (not for production)"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, NOT_FOR_PRODUCTION),
    ])


def _write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    path.chmod(0o600)


def _issue_root(common_name: str, key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(_name(common_name))
        .public_key(public).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def _issue_signer(root: x509.Certificate, root_key: ec.EllipticCurvePrivateKey,
                  key: ec.EllipticCurvePrivateKey, now: dt.datetime) -> x509.Certificate:
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(_name("idavatar C2PA test signer")).issuer_name(root.subject)
        .public_key(public).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
                       critical=False)
        .sign(root_key, hashes.SHA256())
    )


def init_test_pki(directory: str | Path, *, root_name: str = "idavatar test root CA") -> LocalPki:
    """Create a test root CA and an ES256 signing certificate issued by it in ``directory``.

    The root's common name ends in its key's fingerprint, so two test PKIs never share a name.

    Files: ``root.pem`` (the trust anchor to configure), ``root.key``, ``signer.pem`` (signing
    certificate chain, leaf first), ``signer.key`` and a ``NOT-FOR-PRODUCTION.txt`` label.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    root_key = ec.generate_private_key(ec.SECP256R1())
    public_der = root_key.public_key().public_bytes(serialization.Encoding.DER,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    root = _issue_root(f"{root_name} {hashlib.sha256(public_der).hexdigest()[:16]}", root_key, now)
    signer_key = ec.generate_private_key(ec.SECP256R1())
    signer = _issue_signer(root, root_key, signer_key, now)

    pki = LocalPki(directory / "root.pem", directory / "root.key",
                  directory / "signer.pem", directory / "signer.key")
    pki.root_cert.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    _write_private_key(pki.root_key, root_key)
    pki.signing_cert.write_bytes(signer.public_bytes(serialization.Encoding.PEM)
                                 + root.public_bytes(serialization.Encoding.PEM))
    _write_private_key(pki.signing_key, signer_key)
    (directory / "NOT-FOR-PRODUCTION.txt").write_text(
        f"{NOT_FOR_PRODUCTION}\n\nThese keys were generated by `python -m governance pki init` for development "
        "and tests.\nConfigure real signing certificates and trust anchors by path in production.\n")
    return pki
