"""Mixed facial features (MFF): N reference images of one identity → the vision embedding E_r.

The CLIP vision patch features of all N references are concatenated into one sequence, the mean
identity feature of the face recognizer is appended as one more token, and a small transformer mixes
them, so that what the N images share (the identity) is separated from what varies (pose, light,
expression) before it reaches the UNet through the gated self-attention layers.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import IDAdapterConfig


class MixedFacialFeatures(nn.Module):
    def __init__(self, config: IDAdapterConfig):
        super().__init__()
        width = config.cross_attention_dim
        self.patch_proj = nn.Linear(config.vision_hidden_size, width)
        self.identity_proj = nn.Linear(config.identity_dim, width)
        layer = nn.TransformerEncoderLayer(
            d_model=width, nhead=config.mff_heads, dim_feedforward=4 * width,
            activation="gelu", batch_first=True, norm_first=True, dropout=0.0,
        )
        self.blocks = nn.TransformerEncoder(layer, num_layers=config.mff_layers, enable_nested_tensor=False)
        self.norm_out = nn.LayerNorm(width)

    def forward(self, patch_features: torch.Tensor, identity_feature: torch.Tensor) -> torch.Tensor:
        """patch_features (B, N, P, vision_hidden), identity_feature (B, identity_dim) → E_r (B, N·P + 1, width)."""
        batch, n_refs, n_patches, _ = patch_features.shape
        patches = self.patch_proj(patch_features.reshape(batch, n_refs * n_patches, -1))
        identity = self.identity_proj(identity_feature.to(patches.dtype)).unsqueeze(1)
        return self.norm_out(self.blocks(torch.cat([patches, identity], dim=1)))
