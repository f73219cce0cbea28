"""What one training step needs: the config, the frozen models with the adapter, and L = L_SD + λ·L_id."""
from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from diffusers import DDPMScheduler
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch.nn import functional as F

from .base import load_base_pipeline
from .config import IDAdapterConfig
from .identity_loss import FaceIdentity, identity_loss
from .identity_token import identity_token_id, identity_token_injected
from .injection import adapter_modules, attach_identity_layers
from .model import IDAdapter, clip_reference_features

# x̂0 is a usable image only at the low-noise end: at SD's scaled-linear schedule ᾱ_t falls below 0.28
# at t = 500, where the one-step estimate is a blur without a face to align
IDENTITY_TIMESTEPS = (0, 500)


class TrainConfig(BaseModel):
    """Paper defaults (IDAdapter, CVPR 2024): Adam, lr 3e-5, batch 4, 50k steps, λ = 0.1, N = 4."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field(description="Stable Diffusion folder (diffusers layout) or an id in the local HF cache")
    image_encoder: str | None = Field(None, description="CLIP vision folder; default: the base's image_encoder")
    data_dir: str
    output_dir: str
    recognizer: str = "sface"
    recognizer_file: str | None = None
    resolution: int = 768
    num_references: int = 4
    mff_layers: int = 2
    mff_heads: int = 16
    identity_loss_weight: float = 0.1
    identity_timesteps: tuple[int, int] = Field(
        IDENTITY_TIMESTEPS, description="L_id applies to samples with first <= t < last (F(x̂0) is 0 elsewhere)")
    learning_rate: float = 3e-5
    batch_size: int = 4
    gradient_accumulation_steps: int = 1
    max_steps: int = 50_000
    max_grad_norm: float | None = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "bf16"
    gradient_checkpointing: bool = True
    checkpoint_every: int = 5_000
    log_every: int = 50
    resume: str | None = Field(None, description='"latest" or a checkpoint folder')
    report_to: str | None = Field(None, description="an accelerate tracker (tensorboard, wandb), or none")
    governance: str | None = Field(None, description="governance.toml: train only on identities with training consent")
    actor: str = "idadapter-trainer"
    num_workers: int = 4
    seed: int = 0

    @field_validator("identity_timesteps")
    @classmethod
    def _ordered_range(cls, value: tuple[int, int]) -> tuple[int, int]:
        if not 0 <= value[0] < value[1]:
            raise ValueError(f"identity_timesteps must be [first, last) with 0 <= first < last, got {list(value)}")
        return value

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: training config not found")
        text = path.read_text()
        values = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        return cls(**values)


@dataclass
class TrainingModels:
    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    image_encoder: torch.nn.Module
    feature_extractor: object
    noise_scheduler: DDPMScheduler
    adapter: IDAdapter
    face_identity: FaceIdentity
    token_id: int


def load_training_models(config: TrainConfig, device: torch.device, weight_dtype: torch.dtype) -> TrainingModels:
    """The user's base (and CLIP vision) weights, frozen, with a fresh adapter attached."""
    pipe = load_base_pipeline(config.base, config.image_encoder)
    face_identity = FaceIdentity.from_register(config.recognizer, config.recognizer_file)
    return training_models(pipe, face_identity, config, device, weight_dtype)


def training_models(pipe, face_identity: FaceIdentity, config: TrainConfig, device: torch.device,
                    weight_dtype: torch.dtype) -> TrainingModels:
    """Freeze a Stable Diffusion pipeline's models (in `weight_dtype`) and attach a fresh fp32 adapter."""
    for frozen in (pipe.unet, pipe.vae, pipe.text_encoder, pipe.image_encoder):
        frozen.requires_grad_(False).eval().to(device)
        if weight_dtype != torch.float32:
            frozen.to(dtype=weight_dtype)
    adapter_config = IDAdapterConfig.for_models(
        pipe.unet, pipe.text_encoder, pipe.image_encoder, num_references=config.num_references,
        recognizer=config.recognizer, identity_dim=face_identity.recognizer.dim,
        mff_layers=config.mff_layers, mff_heads=config.mff_heads,
    )
    attach_identity_layers(pipe.unet)
    for module in adapter_modules(pipe.unet).values():
        module.float()
    if config.gradient_checkpointing:
        pipe.unet.enable_gradient_checkpointing()
    return TrainingModels(
        unet=pipe.unet.train(), vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
        image_encoder=pipe.image_encoder, feature_extractor=pipe.feature_extractor,
        noise_scheduler=DDPMScheduler.from_config(pipe.scheduler.config),
        adapter=IDAdapter(adapter_config).to(device), face_identity=face_identity.to(device),
        token_id=identity_token_id(pipe.tokenizer, adapter_config.identity_token),
    )


def predicted_original(scheduler: DDPMScheduler, noisy: torch.Tensor, steps: torch.Tensor,
                       prediction: torch.Tensor) -> torch.Tensor:
    """The one-step estimate x̂0 from the UNet's prediction (epsilon or v)."""
    alpha_bar = scheduler.alphas_cumprod.to(noisy.device)[steps].view(-1, 1, 1, 1)
    if scheduler.config.prediction_type == "v_prediction":
        return alpha_bar.sqrt() * noisy - (1 - alpha_bar).sqrt() * prediction
    if scheduler.config.prediction_type == "epsilon":
        return (noisy - (1 - alpha_bar).sqrt() * prediction) / alpha_bar.sqrt()
    raise ValueError(f"prediction type {scheduler.config.prediction_type!r} is not supported (epsilon, v_prediction)")


def training_losses(models: TrainingModels, batch: dict[str, torch.Tensor], generator: torch.Generator,
                    identity_weight: float, unet=None, adapter=None,
                    identity_timesteps: tuple[int, int] = IDENTITY_TIMESTEPS) -> dict[str, torch.Tensor]:
    """L = L_SD + λ·(1/B) Σ F(x̂0_i)·L_id,i on one batch (the paper's loss, averaged over the batch).

    F(x̂0_i) is 1 where sample i's timestep is in `identity_timesteps` and a face is found in its
    decoded x̂0; only those samples are decoded. `unet`/`adapter` may be accelerate-prepared wrappers.
    """
    unet, adapter = unet or models.unet, adapter or models.adapter
    vae, scheduler = models.vae, models.noise_scheduler
    dtype = vae.dtype
    with torch.no_grad():
        latents = vae.encode(batch["pixel_values"].to(dtype)).latent_dist.sample(generator) * vae.config.scaling_factor
        patches, classes = clip_reference_features(models.image_encoder, batch["reference_pixel_values"])
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    steps = torch.randint(0, scheduler.config.num_train_timesteps, (len(latents),), generator=generator,
                          device=latents.device)
    noisy = scheduler.add_noise(latents, noise, steps)
    conditioning = adapter(patches.float(), classes.float(), batch["identity_feature"].float())
    with identity_token_injected(models.text_encoder, models.token_id, conditioning.token):
        text = models.text_encoder(batch["input_ids"])[0]
    prediction = unet(noisy, steps, text, cross_attention_kwargs={"gligen": {"objs": conditioning.visual}}).sample

    target = scheduler.get_velocity(latents, noise, steps) if scheduler.config.prediction_type == "v_prediction" else noise
    loss_sd = F.mse_loss(prediction.float(), target.float())
    losses = {"loss_sd": loss_sd, "loss": loss_sd}
    if identity_weight > 0:
        first, last = identity_timesteps
        in_range = (steps >= first) & (steps < last)
        loss_id, faces = torch.zeros((), device=latents.device), torch.zeros((), device=latents.device)
        if in_range.any():
            x0 = predicted_original(scheduler, noisy[in_range], steps[in_range], prediction[in_range].float())
            decoded = vae.decode((x0 / vae.config.scaling_factor).to(dtype)).sample
            loss_id, found = identity_loss(models.face_identity, ((decoded.float() + 1) / 2).clamp(0, 1),
                                           batch["identity_feature"][in_range], batch_size=len(latents))
            faces = found.sum().float()
        losses.update(loss_id=loss_id, faces=faces, loss=loss_sd + identity_weight * loss_id)
    return losses
