"""The release watermark on the bundled photos: invisible, read back after re-encoding, never on unmarked images."""

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from governance import watermark
from governance.__main__ import main as governance_cli
from governance.release import release
from governance.review_log import APPROVE

from .test_release import PHOTOS, RELEASER, decide, make_run, square

REPO = Path(__file__).resolve().parents[2]


def jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def half(pixels: np.ndarray) -> np.ndarray:
    height, width = pixels.shape[:2]
    return np.asarray(Image.fromarray(pixels).resize((width // 2, height // 2), Image.Resampling.LANCZOS))


def find(pixels: np.ndarray, marks: dict) -> object:
    """What the lookup finds among marks given to 512×512 images."""
    return watermark.find(Image.fromarray(pixels), {(512, 512): marks})


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [np.asarray(square(photo)) for photo in PHOTOS]


def test_marks_survive_jpeg_q70_and_half_size_on_every_bundled_photo_and_are_invisible(photos):
    rng = np.random.default_rng(7)
    for pixels in photos:
        mark = rng.bytes(8)
        marked = watermark.embed(pixels, mark)
        psnr = 10 * np.log10(255 ** 2 / np.mean((marked.astype(float) - pixels) ** 2))
        assert psnr > 37.5
        for attacked in (marked, jpeg(marked, 70), half(marked)):
            assert find(attacked, {mark: "found"}) == "found"


def test_no_false_positive_on_unmarked_bundled_photos_and_their_transforms(photos):
    marks = {np.random.default_rng(seed).bytes(8): seed for seed in range(200)}
    for pixels in photos:
        for view in (pixels, jpeg(pixels, 90), jpeg(pixels, 50), half(pixels), pixels[25:-25, 25:-25]):
            assert find(view, marks) is None


@settings(max_examples=15, deadline=None)
@given(mark=st.binary(min_size=8, max_size=8))
def test_any_mark_reads_back_exactly(photos, mark):
    bits = watermark.read_bits(watermark.embed(photos[0], mark))
    assert np.packbits(bits).tobytes() == mark


def test_rivagan_marks_survive_jpeg_q70_a_crop_and_brightness(photos):
    """RivaGAN through onnxruntime alone (the package's ONNX models), at 256×256 to keep it quick."""
    pixels = np.asarray(Image.fromarray(photos[3]).resize((256, 256), Image.Resampling.LANCZOS))
    mark = watermark.new_mark(watermark.RIVAGAN)
    marked = Image.fromarray(watermark.embed(pixels, mark, watermark.RIVAGAN))
    cropped = marked.crop((13, 13, 243, 243))
    brighter = Image.fromarray(np.clip(np.asarray(marked, float) * 1.2, 0, 255).astype(np.uint8))
    for attacked in (Image.fromarray(jpeg(np.asarray(marked), 70)), cropped, brighter):
        assert watermark.find(attacked, {(256, 256): {mark: "found"}}, watermark.RIVAGAN) == "found"
    unmarked = Image.fromarray(pixels)
    assert watermark.find(unmarked, {(256, 256): {mark: "found"}}, watermark.RIVAGAN) is None


def test_bad_inputs_are_refused_with_the_reason(photos):
    with pytest.raises(watermark.WatermarkError, match=r"32×32 is too small"):
        watermark.embed(np.zeros((32, 32, 3), np.uint8), bytes(8))
    with pytest.raises(watermark.WatermarkError, match="carries 64 bits, got a 32-bit mark"):
        watermark.embed(photos[0], bytes(4))
    with pytest.raises(watermark.WatermarkError, match="unknown watermark method"):
        watermark.read_bits(photos[0], "lsb")


def test_watermarking_loads_no_torch():
    probe = ("import sys, numpy as np\nfrom governance import watermark\n"
             "m = watermark.embed(np.full((256, 256, 3), 128, np.uint8), bytes(8))\nwatermark.read_bits(m)\n"
             "m = watermark.embed(m, bytes(4), watermark.RIVAGAN)\nwatermark.read_bits(m, watermark.RIVAGAN)\n"
             "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_jpeg_resave_of_a_released_image_verifies_as_watermark_pointing_at_its_audit_entry(
        tmp_path, gov, consented, capsys):
    images = make_run(tmp_path / "run", gov, consented, count=2)
    decide(gov, images[1], APPROVE)
    result = release(tmp_path / "run", tmp_path / "rel", gov, actor=RELEASER)
    [item] = result.items
    resaved = tmp_path / "resaved.jpg"
    Image.open(tmp_path / "rel" / item["file"]).convert("RGB").save(resaved, "JPEG", quality=70)
    halved = tmp_path / "halved.png"
    Image.open(tmp_path / "rel" / item["file"]).resize((256, 256)).save(halved)
    unmarked = tmp_path / "unmarked.jpg"
    square(PHOTOS[1]).save(unmarked, quality=70)  # the original photo of the released image, never marked
    config = str(gov.config.audit_log.parents[1] / "governance.toml")

    verify = ["--config", config, "--role", "auditor", "provenance", "verify"]
    assert governance_cli([*verify, str(resaved), str(halved), str(unmarked)]) == 1
    lines = capsys.readouterr().out.splitlines()
    expected = (f"no-manifest, watermark → release {result.release_id} item 1 ({item['file']}; release audit entry "
                f"{result.audit_entry}; original {images[1]}, audit entry {item['source_audit_entry']})")
    assert lines[0].startswith(f"{resaved}: {expected}") and lines[1].startswith(f"{halved}: {expected}")
    assert lines[2].startswith(f"{unmarked}: no-manifest  ")
    sign_entry = next(e for e in gov.audit_log.entries() if e["seq"] == item["source_audit_entry"])
    assert sign_entry["action"] == "provenance.sign" and sign_entry["details"]["file"] == images[1].name

    assert governance_cli([*verify, "--json", str(resaved)]) == 1
    assert json.loads(capsys.readouterr().out)[0]["watermark"] == expected.removeprefix("no-manifest, ")


@pytest.mark.slow
def test_a_rivagan_release_is_traced_after_a_jpeg_resave(tmp_path, gov, consented, capsys):
    images = make_run(tmp_path / "run", gov, consented, count=1)
    decide(gov, images[0], APPROVE)
    config = str(gov.config.audit_log.parents[1] / "governance.toml")
    assert governance_cli(["--config", config, "release", str(tmp_path / "run"), "--to", str(tmp_path / "rel"),
                           "--watermark", "rivaGan", "--json"]) == 0
    [item] = json.loads(capsys.readouterr().out)["items"]
    assert item["watermark_method"] == "rivaGan" and len(bytes.fromhex(item["watermark"])) == 4
    resaved = tmp_path / "resaved.jpg"
    Image.open(tmp_path / "rel" / item["file"]).convert("RGB").save(resaved, "JPEG", quality=70)
    assert governance_cli(["--config", config, "provenance", "verify", str(resaved)]) == 1
    assert "no-manifest, watermark → release urn:uuid:" in capsys.readouterr().out


def test_an_image_too_small_to_mark_is_left_behind(tmp_path, gov, consented):
    images = make_run(tmp_path / "run", gov, consented, count=1)
    small = tmp_path / "small.png"
    Image.open(images[0]).resize((32, 32)).save(small)
    gov.sign_output(small, subject="alice", consent_record_id=consented.record_id, generator="idadapter",
                    model_version="0.1.0", actor=RELEASER, dest=images[0])
    decide(gov, images[0], APPROVE)
    result = release(tmp_path / "run", tmp_path / "rel", gov, actor=RELEASER)
    assert result.left_behind[0].reason.startswith("cannot watermark: image 32×32 is too small to carry a watermark")
