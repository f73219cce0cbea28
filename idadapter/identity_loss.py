"""The identity loss L_id = 1 − cos(R(align(x̂0)), f_a), differentiable in the image.

Faces are found on the decoded image without gradient (YuNet, from the face core); the warp onto the
ArcFace 112×112 template is a torch similarity warp (affine_grid / grid_sample), and the recognizer is
the converted torch module, so gradients reach x̂0 — and through the frozen VAE decoder, the adapter.
Faces are found at the face core's own detection scale (the face core's `YuNetDetector.detect`), so
the landmarks the loss trains on are the ones evaluation judges. The loss is averaged over the batch,
L_id = (1/B) Σ F_i·(1 − cos_i) with F_i = 1 where image i has a detected face (and is selected), so an
image without a face adds zero — a zero that does not depend on its pixel values.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from eval.faces.align import ALIGNED_SIZE, ARCFACE_TEMPLATE, similarity_transform
from eval.faces.detector import YuNetDetector

from .torch_recognizer import TorchRecognizer



def image_tensor(rgb: np.ndarray) -> torch.Tensor:
    """An H×W×3 uint8 RGB array as a (1, 3, H, W) float tensor in [0, 1]."""
    return torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None] / 255


def _homogeneous(matrix_2x3: np.ndarray) -> np.ndarray:
    return np.vstack([matrix_2x3, [0.0, 0.0, 1.0]])


def _pixels_to_normalised(size_x: int, size_y: int) -> np.ndarray:
    """Pixel coordinates (centres at integers) → grid_sample's [-1, 1] with align_corners=False."""
    return np.array([[2.0 / size_x, 0, 1.0 / size_x - 1], [0, 2.0 / size_y, 1.0 / size_y - 1], [0, 0, 1]])


def align_faces(images: torch.Tensor, landmarks: list[np.ndarray], size: int = ALIGNED_SIZE) -> torch.Tensor:
    """images (B, 3, H, W), one 5×2 landmark array each → (B, 3, size, size) on the ArcFace template.

    The same similarity transform as the face core's `align_face` (cv2.warpAffine), as a torch warp.
    """
    height, width = images.shape[-2:]
    thetas = []
    for points in landmarks:
        to_template = _homogeneous(similarity_transform(points, ARCFACE_TEMPLATE * (size / ALIGNED_SIZE)))
        # output normalised → output pixels → source pixels → source normalised
        theta = _pixels_to_normalised(width, height) @ np.linalg.inv(to_template) @ np.linalg.inv(_pixels_to_normalised(size, size))
        thetas.append(theta[:2])
    theta = torch.as_tensor(np.stack(thetas), dtype=images.dtype, device=images.device)
    grid = F.affine_grid(theta, [len(landmarks), images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


class FaceIdentity(nn.Module):
    """images (B, 3, H, W) RGB in [0, 1] → identity embeddings (B, dim) and a found-a-face mask (B,)."""

    def __init__(self, recognizer: TorchRecognizer, detector: YuNetDetector | None = None):
        super().__init__()
        self.recognizer = recognizer
        self.detector = detector or YuNetDetector()

    @classmethod
    def from_register(cls, recognizer_id: str = "sface", model_file=None) -> "FaceIdentity":
        return cls(TorchRecognizer.from_register(recognizer_id, model_file))

    @torch.no_grad()
    def landmarks(self, images: torch.Tensor) -> list[np.ndarray | None]:
        """The main (largest) face's five landmarks per image (in its pixels), or None where no face is found.

        The face core's detector sees the image as evaluation does (8-bit RGB, its own scaling), so
        training aligns each face exactly where evaluation will.
        """
        pixels = torch.nan_to_num(images.detach().float(), nan=0.0).clamp(0, 1)
        rgb = (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        found = [self.detector.detect(np.ascontiguousarray(image)) for image in rgb]
        return [faces[0][2] if faces else None for faces in found]

    def forward(self, images: torch.Tensor, landmarks: list[np.ndarray | None] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings of the faces at `landmarks` (found by `self.landmarks` when not given)."""
        points = self.landmarks(images) if landmarks is None else landmarks
        found = torch.tensor([p is not None for p in points], device=images.device)
        embeddings = torch.zeros(len(images), self.recognizer.dim, device=images.device)
        if found.any():
            faces = align_faces(images[found], [p for p in points if p is not None])
            embeddings = embeddings.index_put((found.nonzero()[:, 0],), self.recognizer(faces.float()))
        return embeddings, found

    @torch.no_grad()
    def mean_identity(self, images: torch.Tensor, landmarks: list[np.ndarray | None] | None = None
                      ) -> torch.Tensor | None:
        """f_a: the normalised mean embedding of the faces found in a reference set, None if none."""
        embeddings, found = self(images, landmarks)
        if not found.any():
            return None
        return F.normalize(embeddings[found].mean(dim=0), dim=-1)


def identity_loss(face_identity: FaceIdentity, images: torch.Tensor, targets: torch.Tensor,
                  batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(1/B) Σ F_i·(1 − cos(R(image_i), target_i)), F_i = a face was found in image i; and F.

    `batch_size` (B, default len(images)) is the whole batch when `images` is the part of it the loss
    applies to (the timesteps in range): the images left out count as F_i = 0.
    """
    batch_size = len(images) if batch_size is None else batch_size
    points = face_identity.landmarks(images)
    found = torch.tensor([p is not None for p in points], device=images.device)
    if not found.any():
        return torch.zeros((), device=images.device), found
    faces = align_faces(images[found], [p for p in points if p is not None])
    embeddings = face_identity.recognizer(faces.float())
    cosine = F.cosine_similarity(embeddings, targets[found].to(embeddings.dtype), dim=-1)
    return (1.0 - cosine).sum() / batch_size, found
