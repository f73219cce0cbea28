"""The release watermark: an imperceptible mark that names a release item, readable after a re-save.

A released image carries a random mark (``new_mark``); the release's audit entry lists the marks
it handed out. Reading an image gives bits, and ``match`` finds the released mark within
``MAX_BIT_ERRORS`` of them: a random unmarked image falls within 8 of 64 bits of a given mark with
probability 3e-10, which is what keeps false positives at zero while tolerating re-encoding.

The embedding is invisible-watermark's (``imwatermark``): DWT-DCT-SVD by default (numpy, OpenCV,
PyWavelets); RivaGAN (the package's ONNX encoder and decoder, run with onnxruntime) and plain DWT-DCT
are measured against it in benchmarks/test_watermark_robustness.py. The package's ``__init__`` imports
torch for RivaGAN's tensor reshaping, which governance must never load, so its method modules are
loaded from their files and RivaGAN's ten lines of reshaping are done here in numpy.
"""

from __future__ import annotations

import importlib.util
import secrets
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Mapping, TypeVar

import cv2
import numpy as np
from PIL import Image

DWT_DCT_SVD = "dwtDctSvd"
DWT_DCT = "dwtDct"
RIVAGAN = "rivaGan"
METHODS = (DWT_DCT_SVD, DWT_DCT, RIVAGAN)
DEFAULT_METHOD = DWT_DCT_SVD
MARK_BITS = {DWT_DCT_SVD: 64, DWT_DCT: 64, RIVAGAN: 32}  # RivaGAN's models take 32 bits only
MAX_BIT_ERRORS = {DWT_DCT_SVD: 8, DWT_DCT: 8, RIVAGAN: 3}
MIN_PIXELS = 256 * 256  # the package's own lower bound
# The package's default quantisation step for the U channel is 36; on the bundled photos it lost 6-8 of
# 64 bits on one photo in ten after a JPEG q90/q70 re-save, 48 lost none (PSNR 40.0 -> 38.3 dB).
DWT_DCT_SVD_SCALES = [0, 48, 0]

T = TypeVar("T")


class WatermarkError(ValueError):
    pass


@cache
def _package_dir() -> Path:
    spec = importlib.util.find_spec("imwatermark")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise WatermarkError("the invisible-watermark package (imwatermark) is not installed: "
                             "pip install --no-deps invisible-watermark==0.2.0")
    return Path(spec.submodule_search_locations[0])


@cache
def _method_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"_imwatermark_{name}", _package_dir() / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def _rivagan_session(part: str):
    import onnxruntime

    return onnxruntime.InferenceSession(str(_package_dir() / f"rivagan_{part}.onnx"),
                                        providers=["CPUExecutionProvider"])


def new_mark(method: str = DEFAULT_METHOD) -> bytes:
    """A fresh random mark of the method's size."""
    return secrets.token_bytes(MARK_BITS[_known(method)] // 8)


def embed(rgb: np.ndarray, mark: bytes, method: str = DEFAULT_METHOD) -> np.ndarray:
    """``rgb`` (H×W×3 uint8) with ``mark`` embedded."""
    bits = np.unpackbits(np.frombuffer(mark, dtype=np.uint8))
    if len(bits) != MARK_BITS[_known(method)]:
        raise WatermarkError(f"{method} carries {MARK_BITS[method]} bits, got a {len(bits)}-bit mark")
    bgr = _bgr(rgb)
    if method == RIVAGAN:
        encoded = _rivagan_session("encoder").run(None, {"frame": _rivagan_frame(bgr),
                                                         "data": bits[None].astype(np.float32)})[0]
        marked = ((np.clip(encoded[0, :, 0].transpose(1, 2, 0), -1, 1) + 1) * 127.5).astype(np.uint8)
    else:
        marked = _dwt_embedder(method, list(bits)).encode(bgr)
    return cv2.cvtColor(np.clip(marked, 0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB)


def read_bits(rgb: np.ndarray, method: str = DEFAULT_METHOD) -> np.ndarray:
    """The bits ``method`` reads from ``rgb`` (any image: unmarked ones give noise)."""
    bgr = _bgr(rgb)
    if _known(method) == RIVAGAN:
        scores = _rivagan_session("decoder").run(None, {"frame": _rivagan_frame(bgr)})[0][0]
        return (scores > 0.52).astype(np.uint8)  # the package's threshold
    return np.asarray(_dwt_embedder(method, []).decode(bgr), dtype=np.uint8)


def match(bits: np.ndarray, marks: Mapping[bytes, T], method: str = DEFAULT_METHOD) -> T | None:
    """The value of the mark nearest to ``bits``, if it is within the method's bit-error tolerance."""
    best, best_errors = None, MAX_BIT_ERRORS[_known(method)] + 1
    for mark, value in marks.items():
        errors = int(np.count_nonzero(np.unpackbits(np.frombuffer(mark, dtype=np.uint8)) != bits))
        if errors < best_errors:
            best, best_errors = value, errors
    return best


def find(picture: Image.Image, marks_by_size: Mapping[tuple[int, int], Mapping[bytes, T]],
         method: str = DEFAULT_METHOD) -> T | None:
    """The value of the mark ``picture`` carries, looking at its own size (every mark) and resized to
    each marked image's (width, height) (that size's marks): the second undoes a rescale."""
    every_mark = {mark: value for marks in marks_by_size.values() for mark, value in marks.items()}
    views = [(picture.size, every_mark), *((size, marks) for size, marks in marks_by_size.items()
                                           if size != picture.size)]
    for size, marks in views:
        view = picture if size == picture.size else picture.resize(size, Image.Resampling.LANCZOS)
        if size[0] * size[1] >= MIN_PIXELS:
            found = match(read_bits(np.asarray(view.convert("RGB")), method), marks, method)
            if found is not None:
                return found
    return None


def _known(method: str) -> str:
    if method not in METHODS:
        raise WatermarkError(f"unknown watermark method {method!r} (expected one of {METHODS})")
    return method


def _bgr(rgb: np.ndarray) -> np.ndarray:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise WatermarkError(f"expected an H×W×3 uint8 RGB image, got {rgb.dtype} {rgb.shape}")
    if rgb.shape[0] * rgb.shape[1] < MIN_PIXELS:
        raise WatermarkError(f"image {rgb.shape[1]}×{rgb.shape[0]} is too small to carry a watermark "
                             f"(needs at least {MIN_PIXELS} pixels, e.g. 256×256)")
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


def _dwt_embedder(method: str, bits: list[int]):
    if method == DWT_DCT_SVD:
        return _method_module("dwtDctSvd").EmbedDwtDctSvd(bits, wmLen=MARK_BITS[method], scales=DWT_DCT_SVD_SCALES)
    return _method_module("maxDct").EmbedMaxDct(bits, wmLen=MARK_BITS[method])


def _rivagan_frame(bgr: np.ndarray) -> np.ndarray:
    """(1, 3, 1, H, W) float32 in [-1, 1], the layout RivaGAN's video models take."""
    return (bgr.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None, :, None]
