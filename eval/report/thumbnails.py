"""Small JPEG data URIs, so a report of a few hundred images stays small enough to mail."""
from __future__ import annotations

import base64
import io
from functools import lru_cache
from pathlib import Path

from PIL import Image

from eval.faces import FaceInputError, load_image

TILE_PX = 200
CROP_PX = 96
JPEG_QUALITY = 72


class ThumbnailError(ValueError):
    pass


@lru_cache(maxsize=2048)
def _cached(path: str, mtime_ns: int, size: int) -> str:
    try:
        image = Image.fromarray(load_image(path))  # upright, RGB, any mode, bomb-capped
    except FaceInputError as exc:
        raise ThumbnailError(f"{path}: cannot read image ({exc.reason})") from exc
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail_data_uri(path: str | Path, size: int = TILE_PX) -> str:
    """The image at `path` shrunk to fit `size`x`size` px, as a JPEG data URI.

    Raises ThumbnailError naming the file when it is missing or unreadable."""
    path = Path(path)
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError as exc:
        raise ThumbnailError(f"{path}: cannot read image ({exc.strerror or exc})") from exc
    return _cached(str(path), mtime_ns, size)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def svg_data_uri(svg: bytes) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")
