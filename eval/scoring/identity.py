"""ID-Sim against the reference(s), the reference's pose/expression, and copy-paste detection.

ID-Sim (IDAdapter): the similarity between the generated main face's embedding and the reference
embedding, per recognizer — cosine for SFace/ArcFace, ``1 - d / 1.2`` from dlib's L2 distance d (the
face core's `similarity`). With several references the reference embedding is their mean (each
L2-normalised first for the cosine recognizers), the reference pose their mean pose, and the
reference expression their most common label.

Copy-paste: an output whose identity similarity is at the top of the scale on every recognizer that
has a copy threshold here, and whose head pose lies within the face core's pose noise of the
reference's. Set on the bundled photos (eval/demo): lightly edited copies of a photo (crop, rescale,
colour jitter, JPEG at quality 35) score 0.95-0.99 on SFace and 0.83-0.98 on dlib, while another real
photo of the same person scores at most 0.84 (SFace) and 0.78 (dlib); the thresholds sit between.
Pose tolerance from the face core's measured noise floor (mesh pose, docs/eval.md "Head pose"): the
12 demo copies move yaw by at most 0.41 and pitch by at most 0.55 degrees; a 15% off-centre crop
moves any angle by at most 1.56 and a JPEG q30 re-save by 0.77; the tolerance is 1.5x the worst
1.56 (2.3), rounded up to 3 degrees. The nearest new photo of the same person differs by 3.9 / 5.1
degrees. Expression is reported but not part of the rule: the expression classifier's label can
flip under a light edit of a borderline face.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from eval.faces import similarity
from eval.scoring.analysis import ImageRecord

DISTANCE_RECOGNIZERS = {"dlib"}  # compared by L2 distance: averaged as they are, not normalised
COPY_SIMILARITY = {"sface": 0.90, "dlib": 0.80, "arcface": 0.85}  # arcface: not measured here (user-supplied)
COPY_MAX_YAW = 3.0
COPY_MAX_PITCH = 3.0


@dataclass
class ReferenceProfile:
    embeddings: dict[str, np.ndarray]
    yaw: float | None
    pitch: float | None
    expression: str | None


def reference_profile(references: list[ImageRecord], recognizers: list[str]) -> ReferenceProfile:
    """Combine the references that hold a face; raises ValueError naming the ones that do not."""
    usable = [r for r in references if r.has_face]
    if not usable:
        reasons = "; ".join(f"{r.path.name}: {r.error or 'no face'}" for r in references)
        raise ValueError(f"no usable reference face ({reasons})")
    embeddings = {}
    for name in recognizers:
        vectors = np.stack([r.embeddings[name] for r in usable]).astype(np.float64)
        if name not in DISTANCE_RECOGNIZERS:
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True) + 1e-12
        embeddings[name] = vectors.mean(axis=0)
    poses = [r for r in usable if r.yaw is not None]
    labels = [r.expression for r in usable if r.expression]
    return ReferenceProfile(
        embeddings=embeddings,
        yaw=float(np.mean([r.yaw for r in poses])) if poses else None,
        pitch=float(np.mean([r.pitch for r in poses])) if poses else None,
        expression=Counter(labels).most_common(1)[0][0] if labels else None,
    )


def id_similarities(image: ImageRecord, reference: ReferenceProfile) -> dict[str, float]:
    return {name: similarity(name, image.embeddings[name], ref) for name, ref in reference.embeddings.items()
            if name in image.embeddings}


def is_copy_paste(similarities: dict[str, float], d_yaw: float | None, d_pitch: float | None,
                  copy_similarity: dict[str, float] = COPY_SIMILARITY) -> bool:
    judged = {name: value for name, value in similarities.items() if name in copy_similarity}
    if not judged or d_yaw is None or d_pitch is None:
        return False
    return (all(value >= copy_similarity[name] for name, value in judged.items())
            and abs(d_yaw) <= COPY_MAX_YAW and abs(d_pitch) <= COPY_MAX_PITCH)
