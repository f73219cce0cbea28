import json

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from PIL import Image

from governance.__main__ import main
from governance.pki import NOT_FOR_PRODUCTION, init_test_pki
from governance.provenance import CONSENT_ASSERTION, ImageSigner, ProvenanceVerifier, SigningIdentity

RECORD = "urn:uuid:00000000-0000-4000-8000-000000000001"


@pytest.fixture
def pki(tmp_path):
    return init_test_pki(tmp_path / "pki")


@pytest.fixture
def signed(pki, png, tmp_path):
    signer = ImageSigner(SigningIdentity.from_files(pki.signing_cert, pki.signing_key))
    return signer.sign(png, tmp_path / "signed.png", generator="idadapter", model_version="0.1.0",
                       consent_record_id=RECORD)


def test_test_pki_has_the_profile_c2pa_needs(pki):
    leaf, root = x509.load_pem_x509_certificates(pki.signing_cert.read_bytes())
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.EMAIL_PROTECTION])
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    assert leaf.issuer == root.subject != leaf.subject
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert NOT_FOR_PRODUCTION in leaf.subject.rfc4514_string()
    assert NOT_FOR_PRODUCTION in (pki.root_cert.parent / "NOT-FOR-PRODUCTION.txt").read_text()


def test_signed_image_is_trusted_and_labelled_ai_generated(pki, signed):
    result = ProvenanceVerifier([pki.root_cert]).verify(signed)
    assert result.status == "trusted"
    assert (result.consent_record_id, result.generator, result.model_version, result.ai_generated) == (
        RECORD, "idadapter", "0.1.0", True)


def test_manifest_holds_no_biometric_data(pki, signed, png):
    import c2pa
    with c2pa.Reader("image/png", open(signed, "rb")) as reader:
        manifest = reader.get_active_manifest()
    assert [a["label"] for a in manifest["assertions"]] == ["c2pa.actions.v2", CONSENT_ASSERTION]
    assert set(manifest["assertions"][1]["data"]) == {"consent_record_id", "signed_at"}
    assert "thumbnail" not in json.dumps(manifest)
    assert signed.stat().st_size < 1.2 * png.stat().st_size  # no thumbnail: the file does not double


def test_pixel_edit_is_tampered(pki, signed):
    content = bytearray(signed.read_bytes())
    content[content.find(b"IDAT") + 200] ^= 0xFF
    signed.write_bytes(bytes(content))
    result = ProvenanceVerifier([pki.root_cert]).verify(signed)
    assert result.status == "tampered" and "assertion.dataHash.mismatch" in result.codes


def test_manifest_edit_is_tampered(pki, signed):
    content = signed.read_bytes()
    signed.write_bytes(content.replace(RECORD.encode(), RECORD[:-1].encode() + b"2"))
    result = ProvenanceVerifier([pki.root_cert]).verify(signed)
    assert result.status == "tampered" and "assertion.hashedURI.mismatch" in result.codes


def test_resave_drops_the_manifest(pki, signed, tmp_path):
    resaved = tmp_path / "resaved.png"
    Image.open(signed).save(resaved)
    assert ProvenanceVerifier([pki.root_cert]).verify(resaved).status == "no-manifest"


def test_certificate_from_another_root_is_untrusted(pki, signed, tmp_path):
    other = init_test_pki(tmp_path / "other")
    result = ProvenanceVerifier([other.root_cert]).verify(signed)
    assert result.status == "untrusted" and "signingCredential.untrusted" in result.codes


def test_cli_verify_reports_each_image(pki, signed, png, tmp_path, capsys):
    code = main(["--role", "auditor", "provenance", "verify", str(signed), str(png), "--json",
                 "--trust-anchor", str(pki.root_cert)])
    report = json.loads(capsys.readouterr().out)
    assert code == 1  # one image has no manifest
    assert [(r["status"], r["consent_record_id"]) for r in report] == [("trusted", RECORD), ("no-manifest", None)]
    assert main(["--role", "auditor", "provenance", "verify", str(signed), "--trust-anchor", str(pki.root_cert)]) == 0
