"""The adapter's configuration: every size the adapter's weights depend on, read off the base models.

Saved as JSON next to (and inside the metadata of) the adapter's safetensors file, so that loading can
check the adapter matches the base it is loaded into and say what differs.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

ADAPTER_FORMAT_VERSION = 1


class IDAdapterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = ADAPTER_FORMAT_VERSION
    num_references: int = Field(4, ge=1, description="N, the reference images mixed per identity")
    cross_attention_dim: int = Field(description="UNet cross-attention width; E_r's token width")
    text_hidden_size: int = Field(description="text encoder input-embedding width; E_c's width")
    vision_hidden_size: int = Field(description="CLIP vision hidden width (patch and class features)")
    vision_tokens: int = Field(description="CLIP vision tokens per image (patches + class token)")
    recognizer: str = Field("sface", description="face-recognizer id in eval.models (sface, arcface)")
    identity_dim: int = Field(128, description="the recognizer's feature width (sface 128, arcface 512)")
    mff_layers: int = Field(2, ge=1, description="transformer blocks in the mixed-facial-features encoder")
    mff_heads: int = Field(16, ge=1)
    identity_token: str = Field("sks", description="the prompt word whose input embedding E_c replaces")
    reference_crop_scale: float | None = Field(
        3.5, gt=0, description="references are cropped to a square this many eye-to-mouth distances wide "
                               "around the face before CLIP; None: the whole photo")

    @classmethod
    def for_models(cls, unet, text_encoder, image_encoder, **overrides) -> "IDAdapterConfig":
        """Sizes read from a diffusers UNet, a transformers CLIP text model and CLIP vision model."""
        vision = image_encoder.config
        tokens = (vision.image_size // vision.patch_size) ** 2 + 1
        fields = dict(
            cross_attention_dim=unet.config.cross_attention_dim,
            text_hidden_size=text_encoder.get_input_embeddings().embedding_dim,
            vision_hidden_size=vision.hidden_size,
            vision_tokens=tokens,
        )
        fields.update(overrides)
        return cls(**fields)
