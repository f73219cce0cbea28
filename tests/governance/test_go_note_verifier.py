"""Our checkpoints and witness cosignatures, opened by Go's golang.org/x/mod/sumdb/note (tests/go/notecheck).

Built offline in GOPATH mode against Debian's golang-golang-x-mod-dev source (`.ci/install-go`).
"""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from governance.audit_log import AuditLog
from governance.checkpoint import COSIGNATURE_V1, VerifierKey, cosign

REPO = Path(__file__).resolve().parents[2]
GOPATH = Path("/usr/share/gocode")


@pytest.fixture(scope="module")
def notecheck(tmp_path_factory) -> Path:
    if shutil.which("go") is None or not (GOPATH / "src/golang.org/x/mod/sumdb/note").is_dir():
        if os.environ.get("CI"):
            pytest.fail("Go or golang-golang-x-mod-dev is missing: .ci/install-go installs them")
        pytest.skip("Go or golang-golang-x-mod-dev is missing: run .ci/install-go")
    out = tmp_path_factory.mktemp("go")
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": str(GOPATH), "GOPROXY": "off", "GOFLAGS": "",
           "GOCACHE": str(out / "cache"), "CGO_ENABLED": "0"}
    subprocess.run(["go", "build", "-o", str(out / "notecheck"), "./tests/go/notecheck"], cwd=REPO, env=env,
                   check=True, timeout=300)
    return out / "notecheck"


def go_verify(notecheck: Path, checkpoint: Path, log_vkey: str, *witnesses: str) -> subprocess.CompletedProcess:
    args = [str(notecheck), "-log", log_vkey, *(a for w in witnesses for a in ("-witness", w)), str(checkpoint)]
    return subprocess.run(args, capture_output=True, text=True, timeout=30)


def test_go_accepts_our_checkpoint_and_witness_cosignature(notecheck, tmp_path):
    key, witness = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    log = AuditLog(tmp_path / "audit.jsonl", signing_key=key, checkpoint_every=4, origin="example.org/log/3f2a")
    for i in range(5):
        log.append(actor="olga", action="vault.read", object=str(i))
    checkpoint = log.checkpoints.paths()[-1]
    log_vkey = str(VerifierKey(log.origin, key.public_key()))
    witness_vkey = str(VerifierKey("witness.example/w1", witness.public_key(), COSIGNATURE_V1))

    plain = go_verify(notecheck, checkpoint, log_vkey)
    assert plain.returncode == 0 and "ok: example.org/log/3f2a size 4" in plain.stdout, plain.stdout

    assert go_verify(notecheck, checkpoint, log_vkey, witness_vkey).returncode == 1  # not cosigned yet
    checkpoint.write_text(cosign(checkpoint.read_text(), "witness.example/w1", witness))
    both = go_verify(notecheck, checkpoint, log_vkey, witness_vkey)
    assert both.returncode == 0 and "witness.example/w1" in both.stdout, both.stdout

    other = str(VerifierKey("witness.example/w1", Ed25519PrivateKey.generate().public_key(), COSIGNATURE_V1))
    assert go_verify(notecheck, checkpoint, log_vkey, other).returncode == 1
    wrong_log = str(VerifierKey(log.origin, Ed25519PrivateKey.generate().public_key()))
    assert go_verify(notecheck, checkpoint, wrong_log).returncode == 1
    edited = tmp_path / "edited.checkpoint"
    edited.write_text(checkpoint.read_text().replace("\n4\n", "\n5\n", 1))
    assert go_verify(notecheck, edited, log_vkey).returncode == 1


def test_go_accepts_a_checkpoint_exported_from_the_postgres_log(notecheck, postgres_url, tmp_path):
    from governance.audit_sql import SqlAuditLog
    key = Ed25519PrivateKey.generate()
    log = SqlAuditLog(postgres_url, signing_key=key, checkpoint_every=4, origin="example.org/log/pg")
    for i in range(6):
        log.append(actor="olga", action="vault.read", object=str(i))
    _, folder = log.export(tmp_path / "export.jsonl")
    newest = sorted(folder.glob("*.checkpoint"))[-1]
    checked = go_verify(notecheck, newest, str(VerifierKey(log.origin, key.public_key())))
    assert checked.returncode == 0 and "ok: example.org/log/pg size 4" in checked.stdout, checked.stdout
