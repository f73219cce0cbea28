"""Face analysis of every image a run needs, through the result cache.

Per image (by content hash) the cache holds three kinds of record:
- the main face's geometry, pose and expression, keyed by the detector / pose / expression models
  (with their weight hashes) and `FACES_VERSION`;
- its aligned crop, under the same key plus "/crop": the driver reads crops a few at a time when a
  stage needs them (`CachedFaceAnalysis.crops`), never all of a run's at once;
- one embedding per recognizer, keyed by that recognizer's models, `EMBED_VERSION` and the recognizer's
  `implementation` when it runs the model in another runtime (dlib's ResNet in onnxruntime).
Images missing everything go to the engine (`LocalFaceEngine`, or one with the same methods, such
as eval/engines/ray.py) in chunks, each chunk committed to the cache before the next; an image
missing only some recognizers' embeddings has just those computed from its cached face, so changing
one recognizer recomputes only its column. Every miss is decoded from the very bytes that were hashed.
"""
from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tqdm import tqdm

from eval.cache import ResultCache, sha256_bytes
from eval.faces import Face, FaceAnalyzer, FaceInputError, ImageAnalysis
from eval.faces.cpus import cpu_budget
from eval.faces.images import decode_image, read_image_bytes
from eval.files import sha256_file
from eval.models import ModelNotFound, file_sha256, model_path

FACES_VERSION = "faces-v3"  # v3: canonical orientation; mesh rounds until the crop settles
EMBED_VERSION = "embed-v1"
OPTIONAL_RECOGNIZERS = ("arcface",)
CACHE_CHUNK = 32  # misses analysed, then committed to the cache, together


def default_recognizers() -> list[str]:
    """SFace and dlib, and ArcFace when the user has supplied its weights."""
    found = ["sface", "dlib"]
    for name in OPTIONAL_RECOGNIZERS:
        try:
            model_path(name)
            found.append(name)
        except ModelNotFound:
            pass
    return found


@dataclass
class ImageRecord:
    """What scoring needs of one image: readability, face count and the main face."""

    path: Path
    sha256: str | None = None
    error: str | None = None  # why the image could not be read, or holds no usable face
    readable: bool = False
    n_faces: int = 0
    yaw: float | None = None
    pitch: float | None = None
    roll: float | None = None
    expression: str | None = None
    embeddings: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def has_face(self) -> bool:
        return self.n_faces > 0


def fingerprint(model_ids: list[str]) -> str:
    """Model ids with the first 16 hex digits of their weight files' sha256."""
    return "+".join(f"{model}:{file_sha256(model_path(model))[:16]}" for model in model_ids)


def _face_record(result: ImageAnalysis) -> dict:
    record: dict = {"error": result.error, "readable": result.width > 0, "n_faces": len(result.faces)}
    face = result.main_face
    if face is not None:
        record.update(bbox=np.asarray(face.bbox, dtype=np.float64), landmarks=np.asarray(face.landmarks),
                      score=float(face.score), aligned=np.asarray(face.aligned, dtype=np.uint8))
        if face.pose is not None:
            record.update(yaw=face.pose.yaw, pitch=face.pose.pitch, roll=face.pose.roll)
        if face.expression is not None:
            record["expression"] = face.expression.label
    return record


def _distinct(records: list[ImageRecord]) -> list[ImageRecord]:
    """One record per content hash (copies of an image are analysed once)."""
    return list({record.sha256: record for record in records}.values())


@dataclass(frozen=True)
class Miss:
    """An image the cache has no record for: its path and the sha256 its bytes had when hashed."""

    path: Path
    sha256: str


class ImageChanged(FaceInputError):
    """The file is no longer the bytes that were hashed (replaced, deleted, unreadable): its result
    must not be cached under the old hash."""


def verified_pixels(miss: Miss) -> np.ndarray:
    """The pixels of exactly the bytes hashed as `miss.sha256`: one read, hashed and decoded.

    Raises ImageChanged when the file's bytes are not those any more (or cannot be read again), and
    FaceInputError when those bytes are not a usable image (a property of the bytes: cacheable)."""
    try:
        data = read_image_bytes(miss.path)
    except FaceInputError as error:
        raise ImageChanged(miss.path, f"{error.reason} (it was readable when hashed)") from None
    if sha256_bytes(data) != miss.sha256:
        raise ImageChanged(miss.path, "changed while the run was scoring it (its bytes no longer match "
                                      "the hash taken at the start); rerun to score the new image")
    return decode_image(data, str(miss.path))


def map_in_process(function: Callable[[list], list], items: Iterable,
                   batch_size: int) -> Iterator[list[tuple[int, object]]]:
    """A scoring stage run here: `function` (one output per item of its batch) on `batch_size` items
    at a time; yields (item position, output) pairs a batch at a time, as an engine's `map_stage` does."""
    items, position = iter(items), 0
    while batch := list(itertools.islice(items, batch_size)):
        yield list(enumerate(function(batch), start=position))
        position += len(batch)


def map_in_threads(function: Callable[[list], list], items: Iterable,
                   batch_size: int) -> Iterator[list[tuple[int, object]]]:
    """`map_in_process` with as many batches at once as this process has CPUs, in order: for stages
    whose work releases the GIL (torch, one thread per batch: `eval.scoring.torch_inference`). The
    first batch runs alone, so that a model built on first use is built once."""
    items = iter(items)
    batches = iter(lambda: list(itertools.islice(items, batch_size)), [])
    first = next(batches, None)
    if first is None:
        return
    yield list(enumerate(function(first)))
    position, threads = len(first), cpu_budget()
    with ThreadPoolExecutor(threads) as pool:
        running: deque = deque()  # (position of the batch's first item, its future), oldest first
        for batch in batches:
            running.append((position, pool.submit(function, batch)))
            position += len(batch)
            if len(running) > 2 * threads:
                start, outputs = running.popleft()
                yield list(enumerate(outputs.result(), start=start))
        for start, outputs in running:
            yield list(enumerate(outputs.result(), start=start))


class LocalFaceEngine:
    """Analyses cache misses in this process. This is the seam a scoring engine (e.g. Ray) replaces:
    it gets the misses, returns their records, and never touches the cache (the driver writes it).

    `analyze(misses)` -> per miss, in order: (face record, {recognizer: embedding}).
    `analyze_chunks(misses, size)` -> the same as (miss, face record, embeddings), a chunk at a time
    (another engine may yield its chunks in the order they finish).
    `embed(name, misses, faces)` -> per miss: embedding from its cached face record, or an ImageChanged.
    `map_stage(function, items, batch_size)` -> another scoring stage (CLIP, Face Div): see `map_in_threads`.
    A face record with `transient` set describes a read failure, not the bytes: it is never cached."""

    def __init__(self, analyzer: FaceAnalyzer):
        self.analyzer = analyzer

    def analyze(self, misses: list[Miss]) -> list[tuple[dict, dict[str, np.ndarray]]]:
        results: list[tuple[dict, dict[str, np.ndarray]] | None] = [None] * len(misses)
        decoded, positions = [], []
        for position, miss in enumerate(misses):
            try:
                decoded.append(verified_pixels(miss))
                positions.append(position)
            except FaceInputError as error:
                unreadable = {"error": error.reason, "readable": False, "n_faces": 0}
                if isinstance(error, ImageChanged):
                    unreadable["transient"] = True
                results[position] = (unreadable, {})
        for position, result in zip(positions, self.analyzer.analyze(decoded)):
            face = result.main_face
            vectors = {} if face is None else {name: np.asarray(face.embeddings[name], dtype=np.float32)
                                               for name in self.analyzer.recognizers}
            results[position] = (_face_record(result), vectors)
        return results

    def analyze_chunks(self, misses: list[Miss], size: int) -> Iterator[list[tuple[Miss, dict, dict[str, np.ndarray]]]]:
        for start in range(0, len(misses), size):
            chunk = misses[start : start + size]
            yield [(miss, face, vectors) for miss, (face, vectors) in zip(chunk, self.analyze(chunk))]

    map_stage = staticmethod(map_in_threads)

    def close(self) -> None:
        """Nothing to release here; a cluster engine stops what it started."""

    def embed(self, name: str, misses: list[Miss], faces: dict[str, dict]) -> list[np.ndarray | ImageChanged]:
        recognizer = self.analyzer.recognizers[name]
        out: list[np.ndarray | ImageChanged | None] = [None] * len(misses)
        inputs, positions = [], []
        for position, miss in enumerate(misses):
            face = faces[miss.sha256]
            try:
                pixels = verified_pixels(miss)
            except ImageChanged as error:
                out[position] = error
                continue
            # no crop: the recognizer aligns the face from its landmarks, as the analysis did
            main = Face(bbox=tuple(face["bbox"]), score=face["score"], landmarks=face["landmarks"])
            inputs.append(recognizer.prepare(pixels, main))
            positions.append(position)
        for position, vector in zip(positions, recognizer.embed(inputs)):
            out[position] = np.asarray(vector, dtype=np.float32)
        return out


class CachedFaceAnalysis:
    """The driver: hashes every image, looks each content up in the cache, sends the misses to the
    engine chunk by chunk and commits each chunk's records to the cache before the next (a killed
    run loses at most one chunk)."""

    def __init__(self, analyzer: FaceAnalyzer, cache: ResultCache, engine: LocalFaceEngine | None = None):
        self.analyzer = analyzer
        self.cache = cache
        self.engine = engine or LocalFaceEngine(analyzer)
        non_recognizer = [m for m in analyzer.model_ids
                          if not any(m in r.model_ids for r in analyzer.recognizers.values())]
        self.faces_namespace = f"{FACES_VERSION}/{fingerprint(non_recognizer)}/min{analyzer.min_face_size}"
        self.crops_namespace = f"{self.faces_namespace}/crop"
        self.embed_namespaces = {
            name: "/".join(filter(None, (EMBED_VERSION, fingerprint(recognizer.model_ids), recognizer.implementation)))
            for name, recognizer in analyzer.recognizers.items()
        }

    @property
    def recognizers(self) -> list[str]:
        return list(self.analyzer.recognizers)

    def analyze(self, paths: list[Path], progress: bool = False) -> dict[Path, ImageRecord]:
        """{path: ImageRecord} for the distinct `paths`; each distinct content is analysed at most once."""
        records = {path: ImageRecord(path=path) for path in dict.fromkeys(paths)}
        for record in tqdm(records.values(), desc="hashing", unit="img", disable=not progress or len(records) < 1000):
            try:
                record.sha256 = sha256_file(record.path)
            except OSError as error:
                record.error = f"cannot read {record.path}: {error.strerror or error}"
        hashed = [r for r in records.values() if r.sha256]
        hashes = [r.sha256 for r in hashed]
        faces = self.cache.get_many(self.faces_namespace, hashes)
        embeddings = {name: self.cache.get_many(ns, hashes) for name, ns in self.embed_namespaces.items()}
        self._analyze_new(_distinct([r for r in hashed if r.sha256 not in faces]), faces, embeddings, progress)
        changed: dict[str, str] = {}
        for name in self.embed_namespaces:
            missing = _distinct([r for r in hashed if faces[r.sha256]["n_faces"] and r.sha256 not in embeddings[name]
                                 and r.sha256 not in changed])
            if missing:
                self._embed_cached_faces(name, missing, faces, embeddings[name], changed)
        for record in hashed:
            face = faces[record.sha256]
            if record.sha256 in changed:
                record.error = changed[record.sha256]
                continue
            for key in ("error", "readable", "n_faces", "yaw", "pitch", "roll", "expression"):
                if key in face:
                    setattr(record, key, face[key])
            if record.has_face:
                record.embeddings = {name: embeddings[name][record.sha256]["vector"] for name in embeddings}
        return records

    def _analyze_new(self, new: list[ImageRecord], faces: dict[str, dict], embeddings: dict[str, dict[str, dict]],
                     progress: bool) -> None:
        """Send the images the cache has never seen to the engine; commit each chunk's records."""
        with tqdm(total=len(new), desc="faces", unit="img", disable=not progress or not new) as bar:
            for chunk in self.engine.analyze_chunks([Miss(r.path, r.sha256) for r in new], CACHE_CHUNK):
                stored: dict[str, dict[str, dict]] = {self.faces_namespace: {}, self.crops_namespace: {}}
                stored.update({namespace: {} for namespace in self.embed_namespaces.values()})
                for miss, face, vectors in chunk:
                    crop = face.pop("aligned", None)
                    faces[miss.sha256] = face
                    for name, vector in vectors.items():
                        embeddings[name][miss.sha256] = {"vector": vector}
                    if not face.get("transient"):
                        stored[self.faces_namespace][miss.sha256] = face
                        if crop is not None:
                            stored[self.crops_namespace][miss.sha256] = {"aligned": crop}
                        for name, vector in vectors.items():
                            stored[self.embed_namespaces[name]][miss.sha256] = {"vector": vector}
                self.cache.put_records(stored)
                bar.update(len(chunk))

    def crops(self, records: list[ImageRecord]) -> list[np.ndarray | None]:
        """The aligned face crops of `records` (None for one without a face), read from the cache for
        just these records. A crop the cache no longer has (it fell back to memory after a write
        error) is computed again; None when its image has changed since it was hashed."""
        wanted = [record for record in records if record.has_face]
        found = {sha256: record["aligned"]
                 for sha256, record in self.cache.get_many(self.crops_namespace, [r.sha256 for r in wanted]).items()}
        lost = _distinct([record for record in wanted if record.sha256 not in found])
        if lost:
            results = self.engine.analyze([Miss(record.path, record.sha256) for record in lost])
            again = {record.sha256: {"aligned": face["aligned"]} for record, (face, _) in zip(lost, results)
                     if "aligned" in face and not face.get("transient")}
            self.cache.put_many(self.crops_namespace, again)
            found.update({sha256: record["aligned"] for sha256, record in again.items()})
        return [found.get(record.sha256) if record.has_face else None for record in records]

    def _embed_cached_faces(self, name: str, records: list[ImageRecord], faces: dict[str, dict],
                            embeddings: dict[str, dict], changed: dict[str, str]) -> None:
        for start in range(0, len(records), CACHE_CHUNK):
            chunk = [Miss(r.path, r.sha256) for r in records[start : start + CACHE_CHUNK]]
            found = {}
            for miss, vector in zip(chunk, self.engine.embed(name, chunk, faces)):
                if isinstance(vector, ImageChanged):
                    changed[miss.sha256] = vector.reason
                else:
                    found[miss.sha256] = {"vector": vector}
            self.cache.put_many(self.embed_namespaces[name], found)
            embeddings.update(found)
