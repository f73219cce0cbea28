"""Bad input gets a clear error naming the file and the reason; a batch goes on with the rest."""
import numpy as np
import pytest
from PIL import Image

from eval.faces import MAX_PIXELS, FaceInputError, load_image


@pytest.fixture(scope="module")
def portrait(faces_dir) -> Image.Image:
    return Image.open(faces_dir / "sunak.jpg").convert("RGB")


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.fixture
def broken_files(tmp_path, faces_dir):
    jpeg = (faces_dir / "sunak.jpg").read_bytes()
    png_path = tmp_path / "valid.png"
    Image.open(faces_dir / "sunak.jpg").save(png_path)
    png = png_path.read_bytes()
    bomb = tmp_path / "bomb.png"
    Image.new("1", (8000, 8000)).save(bomb)  # 64 Mpx of one bit: a few kB on disk
    return {
        "missing": (tmp_path / "nope.jpg", "file not found"),
        "empty": (write_bytes(tmp_path / "empty.jpg", b""), "empty file"),
        "truncated jpeg": (write_bytes(tmp_path / "cut.jpg", jpeg[: len(jpeg) // 3]), "corrupt or truncated"),
        "corrupt png": (write_bytes(tmp_path / "bad.png", png[:200] + b"\x00" * 500 + png[700:]), "corrupt or truncated"),
        "not an image": (write_bytes(tmp_path / "notes.jpg", b"these are meeting notes, not a photo\n" * 20), "not an image"),
        "bomb": (bomb, "too large"),
        "folder": (tmp_path, "is a folder"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "empty", "truncated jpeg", "corrupt png", "not an image", "bomb", "folder"]
)
def test_unreadable_files_are_refused_with_file_and_reason(broken_files, case):
    path, reason = broken_files[case]
    with pytest.raises(FaceInputError) as caught:
        load_image(path)
    assert caught.value.source == str(path)
    assert reason in caught.value.reason
    assert str(path) in str(caught.value)


def test_bomb_cap_is_pixel_count():
    assert MAX_PIXELS == 40_000_000
    with pytest.raises(FaceInputError, match="too large"):
        load_image(np.zeros((7000, 7000, 3), np.uint8))


@pytest.mark.parametrize("mode", ["CMYK", "I;16", "P", "RGBA", "LA", "L"])
def test_odd_modes_still_give_the_same_person(analyzer, bundled, portrait, tmp_path, mode):
    if mode == "I;16":
        grey = np.asarray(portrait.convert("L"), dtype=np.uint16) * 257
        converted = Image.frombytes("I;16", portrait.size, grey.astype("<u2").tobytes())
        path = tmp_path / "portrait16.png"
    else:
        converted = portrait.convert(mode)
        path = tmp_path / f"portrait_{mode.replace(';', '')}.{'jpg' if mode == 'CMYK' else 'png'}"
    converted.save(path)
    assert Image.open(path).mode == mode
    rgb = load_image(path)
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
    result = analyzer.analyze_one(path)
    assert result.ok, result.error
    reference = bundled["sunak"].main_face.embeddings["sface"]
    from eval.faces import similarity

    assert similarity("sface", reference, result.main_face.embeddings["sface"]) > 0.6


def test_exif_orientation_is_honoured(analyzer, portrait, tmp_path):
    rotated = portrait.rotate(90, expand=True)  # stored sideways ...
    exif = Image.Exif()
    exif[0x0112] = 8  # ... and tagged "rotate 90 CW to display"
    path = tmp_path / "sideways.jpg"
    rotated.save(path, exif=exif)
    assert load_image(path).shape[:2] == (portrait.height, portrait.width)
    face = analyzer.analyze_one(path).main_face
    assert abs(face.pose.roll) < 10


def test_no_face(analyzer):
    gradient = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))
    result = analyzer.analyze_one(gradient)
    assert not result.ok and result.error == "no face detected" and result.faces == []


def test_several_faces_are_flagged_and_the_largest_is_main(analyzer, faces_dir):
    big = Image.open(faces_dir / "sunak.jpg").convert("RGB")
    small = Image.open(faces_dir / "biden.jpg").convert("RGB")
    small = small.resize((small.width * 2 // 3, small.height * 2 // 3))
    canvas = Image.new("RGB", (big.width + small.width, max(big.height, small.height)), "white")
    canvas.paste(big, (0, 0))
    canvas.paste(small, (big.width, 0))
    result = analyzer.analyze_one(canvas)
    assert result.ok and result.multiple_faces and len(result.faces) == 2
    areas = [(f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]) for f in result.faces]
    assert areas[0] > areas[1]
    assert result.main_face.bbox[2] <= big.width  # the main face is Sunak's, on the left


def test_face_below_minimum_size(analyzer, portrait):
    tiny = portrait.resize((portrait.width // 12, portrait.height // 12))
    result = analyzer.analyze_one(tiny)
    assert not result.ok
    assert result.error.startswith("face too small") and "< 40 px" in result.error


def test_a_batch_goes_on_after_bad_items(analyzer, broken_files, faces_dir):
    sources = [broken_files["missing"][0], faces_dir / "biden.jpg", broken_files["truncated jpeg"][0], faces_dir / "sunak.jpg"]
    results = analyzer.analyze(sources)
    assert [r.ok for r in results] == [False, True, False, True]
    assert results[0].error == "file not found"
    assert "truncated" in results[2].error
