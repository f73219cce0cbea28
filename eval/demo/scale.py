"""A large run built from the bundled photos, for scaling tests and benchmarks.

`build_scaled_run(out_dir, lines, distinct)` writes `distinct` different images — each a bundled photo
rescaled, shifted, mirrored, re-lit and re-compressed by its own amount, so every one has its own
bytes and its own face analysis — and a manifest of `lines` lines cycling over them (three systems,
four prompts, one seed per line), each against the subject's first bundled photo as reference.

    python -m eval.demo.scale OUT --lines 2000 --distinct 400
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageEnhance, ImageOps

from eval.demo.build import PHOTOS, person_of, photos_by_person
from eval.manifest import ManifestEntry, write_manifest

SYSTEMS = ("system-a", "system-b", "system-c")
PROMPTS = {"a photo of a person": "identity", "a person at the beach": "scene",
           "a person in a winter coat": "clothing", "a smiling person": "expression"}


def variant(photo: Image.Image, number: int) -> Image.Image:
    """The `number`-th distinct edit of `photo`: deterministic, and the face stays findable."""
    rng = random.Random(number)
    width, height = photo.size
    scale = rng.uniform(0.55, 0.95)
    left, top = int(rng.uniform(0, 0.06) * width), int(rng.uniform(0, 0.06) * height)
    image = photo.crop((left, top, width - left, height - top))
    image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))),
                         Image.Resampling.BICUBIC)
    if number % 2:
        image = ImageOps.mirror(image)
    image = ImageEnhance.Brightness(image).enhance(rng.uniform(0.85, 1.15))
    return ImageEnhance.Contrast(image).enhance(rng.uniform(0.9, 1.1))


def build_scaled_run(out_dir: str | Path, lines: int = 2000, distinct: int = 400) -> Path:
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "references").mkdir(exist_ok=True)
    photos = sorted(PHOTOS.glob("*.jpg"))
    references = {}
    for person, own in photos_by_person().items():
        references[person] = f"references/{own[0].name}"
        (out_dir / references[person]).write_bytes(own[0].read_bytes())
    images = []
    for number in range(distinct):
        photo = photos[number % len(photos)]
        name = f"images/{number:06d}_{photo.stem}.jpg"
        if not (out_dir / name).exists():
            with Image.open(photo) as original:
                variant(original.convert("RGB"), number).save(out_dir / name, quality=85 + number % 10)
        images.append((person_of(photo), name))
    prompts = list(PROMPTS)
    entries = []
    for line in range(lines):
        subject, image = images[line % distinct]
        prompt = prompts[(line // distinct) % len(prompts)]
        entries.append(ManifestEntry(system=SYSTEMS[line % len(SYSTEMS)], subject=subject,
                                     references=[references[subject]], prompt=prompt,
                                     prompt_category=PROMPTS[prompt], seed=line, image=image))
    return write_manifest(out_dir / "manifest.jsonl", entries)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m eval.demo.scale", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--distinct", type=int, default=400, help="different images (at most the lines)")
    args = parser.parse_args(argv)
    print(build_scaled_run(args.out_dir, args.lines, min(args.distinct, args.lines)))


if __name__ == "__main__":
    main()
