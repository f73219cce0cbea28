"""The demo run and the calibration layout, built from the bundled photos (eval/demo/faces).

`build_demo_run(out_dir)` writes a run manifest with three systems that stand in for generators whose
right answer is known, for each person with several photos (the *subject*, whose first photo is the
reference):

- ``ideal``: the subject's other real photos — the same identity in a new pose and expression;
- ``copy-paste``: lightly edited copies of the reference (crop, rescale, colour jitter, JPEG
  re-compression) — the failure IDAdapter was made to fix;
- ``impostor``: photos of other people.

`build_identity_folders(out_dir)` lays the photos out as ``out_dir/<person>/<photo>.jpg`` for
`python -m eval.calibrate`. Both are deterministic and write only under ``out_dir``.
"""
from __future__ import annotations

import argparse
import io
import shutil
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageEnhance

from eval.manifest import ManifestEntry, write_manifest

PHOTOS = Path(__file__).parent / "faces"
PROMPT = "a photo of a person"
PROMPT_CATEGORY = "identity"
IMPOSTORS_PER_SUBJECT = 4


def person_of(photo: Path) -> str:
    """Photos are named <person>[_<detail>].jpg."""
    return photo.stem.split("_")[0]


def photos_by_person(folder: Path = PHOTOS) -> dict[str, list[Path]]:
    people: dict[str, list[Path]] = {}
    for photo in sorted(folder.glob("*.jpg")):
        people.setdefault(person_of(photo), []).append(photo)
    return people


def _crop(image: Image.Image) -> Image.Image:
    width, height = image.size
    return image.crop((int(0.08 * width), int(0.06 * height), int(0.94 * width), int(0.96 * height)))


def _rescale(image: Image.Image) -> Image.Image:
    width, height = image.size
    return image.resize((int(width * 0.6), int(height * 0.6)), Image.Resampling.BICUBIC)


def _colour_jitter(image: Image.Image) -> Image.Image:
    image = ImageEnhance.Brightness(image).enhance(1.12)
    image = ImageEnhance.Contrast(image).enhance(0.9)
    return ImageEnhance.Color(image).enhance(1.25)


def _jpeg(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=35)
    return Image.open(io.BytesIO(buffer.getvalue()))


AUGMENTATIONS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "crop": _crop, "rescale": _rescale, "colour-jitter": _colour_jitter, "jpeg": _jpeg,
}


def _entry(system: str, subject: str, reference: str, seed: int, image: str) -> ManifestEntry:
    return ManifestEntry(system=system, subject=subject, references=[reference], prompt=PROMPT,
                         prompt_category=PROMPT_CATEGORY, seed=seed, image=image)


def build_demo_run(out_dir: str | Path) -> Path:
    """Write photos, edited copies and ``manifest.jsonl`` under `out_dir`; return the manifest path."""
    out_dir = Path(out_dir)
    photos_dir, copies_dir = out_dir / "photos", out_dir / "copy-paste"
    photos_dir.mkdir(parents=True, exist_ok=True)
    copies_dir.mkdir(parents=True, exist_ok=True)
    for photo in sorted(PHOTOS.glob("*.jpg")):
        shutil.copyfile(photo, photos_dir / photo.name)

    people = photos_by_person()
    subjects = {person: photos for person, photos in people.items() if len(photos) > 1}
    entries: list[ManifestEntry] = []
    for subject, photos in subjects.items():
        reference = f"photos/{photos[0].name}"
        for seed, photo in enumerate(photos[1:]):
            entries.append(_entry("ideal", subject, reference, seed, f"photos/{photo.name}"))
        with Image.open(photos[0]) as original:
            original = original.convert("RGB")
            for seed, (name, augment) in enumerate(AUGMENTATIONS.items()):
                copy = copies_dir / f"{subject}_{name}.png"
                augment(original).convert("RGB").save(copy)
                entries.append(_entry("copy-paste", subject, reference, seed, f"copy-paste/{copy.name}"))
        # the first photo of each other person, in name order
        others = [photos_of[0] for person, photos_of in people.items() if person != subject]
        for seed, photo in enumerate(others[:IMPOSTORS_PER_SUBJECT]):
            entries.append(_entry("impostor", subject, reference, seed, f"photos/{photo.name}"))
    return write_manifest(out_dir / "manifest.jsonl", entries)


def build_identity_folders(out_dir: str | Path) -> Path:
    """Copy the bundled photos into ``out_dir/<person>/``; return `out_dir`."""
    out_dir = Path(out_dir)
    for person, photos in photos_by_person().items():
        (out_dir / person).mkdir(parents=True, exist_ok=True)
        for photo in photos:
            shutil.copyfile(photo, out_dir / person / photo.name)
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.demo.build", description="Build the demo run.")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--identities", action="store_true", help="build the calibration layout instead")
    args = parser.parse_args(argv)
    built = build_identity_folders(args.out_dir) if args.identities else build_demo_run(args.out_dir)
    print(built)


if __name__ == "__main__":
    main()
