"""Reading images safely: one function from a path, PIL image or array to an RGB uint8 array.

Every refusal is a `FaceInputError` that names the file and the reason, so a batch can report it
and go on with the rest.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from eval.faces.types import FaceInputError
from eval.files import NotARegularFile, read_regular

MAX_PIXELS = 40_000_000  # ~ 6300 x 6300; larger inputs are refused as likely decompression bombs
MAX_FILE_BYTES = 512 * 1024 * 1024  # an encoded image larger than this is refused before it is read
MAX_ASPECT = 20  # a longer side more than 20 x the shorter one is a strip, not a photo (and breaks resizing)

ImageSource = str | os.PathLike | Image.Image | np.ndarray


def describe(source: ImageSource) -> str:
    """The name an error message uses for `source`."""
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or f"<PIL image {source.mode} {source.size}>"
    return f"<array {getattr(source, 'shape', '?')}>"


def read_image_bytes(path: str | os.PathLike) -> bytes:
    """The encoded bytes of an image file; refuses (FaceInputError) anything but a non-empty regular file."""
    path = Path(path)
    try:
        data = read_regular(path, limit=MAX_FILE_BYTES)
    except FileNotFoundError:
        raise FaceInputError(path, "file not found") from None
    except NotARegularFile as error:
        raise FaceInputError(path, f"is {error.kind}, not an image file") from None
    except OSError as error:
        raise FaceInputError(path, f"cannot read: {error.strerror or error}") from None
    if not data:
        raise FaceInputError(path, "empty file (0 bytes)")
    return data


def _open(data: bytes, name: str) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            _check_size(name, image.size)
            image.load()
    except FaceInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise FaceInputError(name, f"refused as a possible decompression bomb: {error}") from None
    except UnidentifiedImageError:
        raise FaceInputError(name, "not an image (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise FaceInputError(name, f"corrupt or truncated image: {error}") from None
    return image


def _check_size(name: str | Path, size: tuple[int, int]) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise FaceInputError(
            name, f"image too large: {width}x{height} = {width * height:,} pixels (limit {MAX_PIXELS:,})"
        )
    if width < 1 or height < 1:
        raise FaceInputError(name, f"image has no pixels ({width}x{height})")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise FaceInputError(name, f"degenerate image size {width}x{height} (sides more than {MAX_ASPECT}:1)")


def _finite(name: str, values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise FaceInputError(name, "float image with NaN or infinite pixels")
    return values


def to_rgb(image: Image.Image, name: str) -> np.ndarray:
    """Honour EXIF orientation and turn any PIL mode into an RGB uint8 array."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(image, dtype=np.float64)
        top = values.max() if values.max() > 255 else 255.0
        grey = np.clip(values / top * 255.0, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        values = _finite(name, np.asarray(image, dtype=np.float64))
        grey = np.clip(values * (255.0 if values.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        # Transparent areas become white, as on a page, rather than black.
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image.convert("RGBA"))
    rgb = image.convert("RGB")
    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[2] != 3:
        raise FaceInputError(name, f"cannot convert image mode {image.mode} to RGB")
    return array


def _from_array(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise FaceInputError(name, f"array of shape {array.shape} is not an HxW, HxWx1, HxWx3 or HxWx4 image")
    _check_size(name, (array.shape[1], array.shape[0]))
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    if array.shape[2] == 4:
        array = array[..., :3]
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and _finite(name, array).max(initial=0) <= 1.0:
            array = array * 255.0
        array = np.clip(array, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def decode_image(data: bytes, name: str) -> np.ndarray:
    """An RGB uint8 HxWx3 array from an encoded image's bytes (`name` is what errors call it)."""
    image = _open(data, name)
    try:
        return to_rgb(image, name)
    finally:
        image.close()


def load_image(source: ImageSource) -> np.ndarray:
    """An RGB uint8 HxWx3 array from a path, a PIL image or an array (arrays are taken as RGB)."""
    name = describe(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, name)
    if isinstance(source, Image.Image):
        _check_size(name, source.size)
        return to_rgb(source, name)
    if isinstance(source, (str, os.PathLike)):
        return decode_image(read_image_bytes(source), name)
    raise FaceInputError(name, f"unsupported input type {type(source).__name__}")
