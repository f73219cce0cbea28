"""The adapter's own modules (MFF encoder and class-token MLP) and the CLIP reference features they read."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .config import IDAdapterConfig
from .identity_token import ClassTokenMLP
from .mff import MixedFacialFeatures


@dataclass
class IdentityConditioning:
    visual: torch.Tensor  # E_r (B, N·P + 1, cross_attention_dim), into the gated self-attention
    token: torch.Tensor  # E_c (B, text_hidden_size), the identity token's input embedding


class IDAdapter(nn.Module):
    def __init__(self, config: IDAdapterConfig):
        super().__init__()
        self.config = config
        self.mff = MixedFacialFeatures(config)
        self.token_mlp = ClassTokenMLP(config)

    def forward(self, patch_features: torch.Tensor, class_embeddings: torch.Tensor,
                identity_feature: torch.Tensor) -> IdentityConditioning:
        """patch_features (B, N, P, Dv), class_embeddings (B, N, Dv), identity_feature (B, Did)."""
        return IdentityConditioning(
            visual=self.mff(patch_features, identity_feature),
            token=self.token_mlp(class_embeddings),
        )


@torch.no_grad()
def clip_reference_features(image_encoder: nn.Module, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP vision features of (B, N, 3, H, W) references: patches (B, N, P, Dv) and class (B, N, Dv).

    `image_encoder` is a CLIPVisionModel or CLIPVisionModelWithProjection; both hold `vision_model`,
    whose pooled output is the (layer-normed) class token, before any projection.
    """
    batch, n_refs = pixel_values.shape[:2]
    outputs = image_encoder.vision_model(pixel_values=pixel_values.flatten(0, 1).to(image_encoder.dtype))
    patches = outputs.last_hidden_state
    return (
        patches.reshape(batch, n_refs, *patches.shape[1:]),
        outputs.pooler_output.reshape(batch, n_refs, -1),
    )
