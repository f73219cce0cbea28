"""Does a reference photo file show the subject it is given for? Checked against the subject's vault photos.

Consent binds a subject id, and a photo file names nobody: an operator could pass a photo of someone
who refused generation under the id of a consenting subject. When the governance vault holds photos
enrolled for the subject (put there under their consent), the photo's main face must match one of
them: SFace, the best similarity over the enrolled photos, at SFace's published same-person
threshold. With nothing enrolled the photo cannot be verified; the caller decides what to do.
"""
from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from eval.faces import FaceAnalyzer, default_threshold, similarity
from governance import Actor, GovernanceContext, Purpose

from .pipeline import NoFaceInReference

RECOGNIZER = "sface"


@dataclass(frozen=True)
class IdentityCheck:
    subject: str
    enrolled: list[str]  # vault file ids of the subject's photos the photo was compared with
    similarity: float | None  # the best match; None when nothing enrolled shows a face
    threshold: float
    recognizer: str = RECOGNIZER

    @property
    def verified(self) -> bool:
        return self.similarity is not None and self.similarity >= self.threshold

    @property
    def refused(self) -> bool:
        """Enrolled photos exist and none matches: the photo is not known to show the subject."""
        return bool(self.enrolled) and not self.verified

    def as_dict(self) -> dict:
        return {"verified": self.verified, "enrolled_photos": len(self.enrolled), "recognizer": self.recognizer,
                "similarity": None if self.similarity is None else round(self.similarity, 4),
                "threshold": self.threshold}


def _decoded(data: bytes) -> Image.Image | None:
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return None  # an enrolled blob that is no image shows no face: it cannot vouch for anyone


def check_photo_identity(photo: Image.Image, subject: str, gov: GovernanceContext, actor: Actor) -> IdentityCheck:
    """Compare `photo`'s main face with the subject's enrolled vault photos (read through the consent
    gate for avatar-generation, each read audited). Raises NoFaceInReference if `photo` shows no face."""
    file_ids = gov.vault.list(subject)
    threshold = default_threshold(RECOGNIZER)
    if not file_ids:
        return IdentityCheck(subject, [], None, threshold)
    enrolled = [_decoded(gov.vault.read(subject, file_id, purpose=Purpose.AVATAR_GENERATION, actor=actor))
                for file_id in file_ids]
    analyzer = FaceAnalyzer(recognizers=(RECOGNIZER,), with_pose=False, with_expression=False)
    probe, *references = analyzer.analyze([photo, *(image for image in enrolled if image is not None)])
    if not probe.ok:
        raise NoFaceInReference(f"{probe.image}: no face found")
    scores = [similarity(RECOGNIZER, probe.main_face.embeddings[RECOGNIZER], reference.main_face.embeddings[RECOGNIZER])
              for reference in references if reference.ok]
    return IdentityCheck(subject, file_ids, max(scores, default=None), threshold)
