"""Train the adapter: `accelerate launch -m idadapter.train --config FILE` (or `python -m idadapter.train`).

One GPU, several GPUs or several machines: whatever `accelerate config` / `accelerate launch` set up.
The base model (UNet, VAE, text encoder, CLIP vision) is frozen; only the adapter trains, with
L = L_SD + λ·L_id. Checkpoints hold only the adapter, the optimizer and the step; `resume = "latest"`
continues the newest one exactly where it stopped (each step's data and noise derive from the seed and
the step number).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from diffusers import DDPMScheduler
from pydantic import BaseModel, ConfigDict, Field
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from .config import IDAdapterConfig
from .data import IdentityDataset, StepBatchSampler, identity_folders, scan_identity_folders
from .identity_loss import FaceIdentity, identity_loss
from .identity_token import identity_token_id, identity_token_injected
from .injection import adapter_modules, attach_identity_layers
from .model import IDAdapter, clip_reference_features
from .parameters import parameter_counts, trainable_parameters
from .pipeline import load_base_pipeline
from .weights import load_adapter_weights, save_adapter

log = logging.getLogger("idadapter.train")
CHECKPOINT_PREFIX = "checkpoint-"
STATE_NAME = "trainer_state.json"


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
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    pipe = load_base_pipeline(config.base)
    if config.image_encoder is not None:
        pipe.register_modules(
            image_encoder=CLIPVisionModelWithProjection.from_pretrained(config.image_encoder, local_files_only=True),
            feature_extractor=CLIPImageProcessor.from_pretrained(config.image_encoder, local_files_only=True),
        )
    if pipe.image_encoder is None:
        raise FileNotFoundError(f"{config.base}: no image_encoder in the base folder; set image_encoder = \"PATH\"")
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
                    identity_weight: float, unet=None, adapter=None) -> dict[str, torch.Tensor]:
    """L = L_SD + λ·L_id on one batch; `unet`/`adapter` may be accelerate-prepared wrappers of the models'."""
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
        x0 = predicted_original(scheduler, noisy, steps, prediction.float())
        decoded = vae.decode((x0 / vae.config.scaling_factor).to(dtype)).sample
        loss_id, used = identity_loss(models.face_identity, ((decoded.float() + 1) / 2).clamp(0, 1), batch["identity_feature"])
        losses.update(loss_id=loss_id, faces=used.sum().float(), loss=loss_sd + identity_weight * loss_id)
    return losses


def consented_identities(governance_config: str | Path, identities: list[str], actor_name: str) -> set[str]:
    """The identities whose training consent holds now; each check, allowed or refused, is audit-logged."""
    from governance import Actor, ConsentRefused, GovernanceContext, Purpose

    gov = GovernanceContext.load(governance_config)
    actor = Actor(actor_name, "operator")
    allowed = set()
    for identity in identities:
        try:
            gov.authorize(identity, Purpose.TRAINING, actor=actor)
            allowed.add(identity)
        except ConsentRefused as refusal:
            log.warning("identity %r left out of training: %s", identity, refusal.decision.reason)
    gov.audit_log.checkpoint()
    if not allowed:
        raise ValueError(f"no identity in the training data has training consent in {governance_config}")
    return allowed


def find_checkpoint(output_dir: Path, resume: str | None) -> Path | None:
    if resume is None:
        return None
    if resume != "latest":
        path = Path(resume)
        if not (path / STATE_NAME).is_file():
            raise FileNotFoundError(f"{path}: not a training checkpoint (no {STATE_NAME})")
        return path
    found = [p for p in output_dir.glob(f"{CHECKPOINT_PREFIX}*") if (p / STATE_NAME).is_file()]
    return max(found, key=lambda p: int(p.name.removeprefix(CHECKPOINT_PREFIX)), default=None)


def _step_seed(seed: int, step: int, process: int) -> int:
    return (seed * 1_000_003 + step) * 1_009 + process


def train(config: TrainConfig) -> Path:
    """Run (or resume) training; returns the folder holding the final adapter."""
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=config.report_to, project_dir=str(output_dir),
    )
    set_seed(config.seed)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    models = load_training_models(config, accelerator.device, weight_dtype)
    if accelerator.is_main_process:
        counts = parameter_counts(models.adapter, models.unet)
        log.info("trainable parameters: %s", ", ".join(f"{k} {v / 1e6:.2f}M" for k, v in counts.items()))
    optimizer = torch.optim.Adam(trainable_parameters(models.adapter, models.unet), lr=config.learning_rate)
    unet, adapter, optimizer = accelerator.prepare(models.unet, models.adapter, optimizer)

    def save_hook(_models, weights, checkpoint_dir):
        if accelerator.is_main_process:
            save_adapter(checkpoint_dir, models.adapter, models.unet)
        weights.clear()  # the frozen base is never written into a checkpoint

    def load_hook(loaded_models, checkpoint_dir):
        load_adapter_weights(checkpoint_dir, models.adapter, models.unet)
        loaded_models.clear()

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
    start_step = 0
    checkpoint = find_checkpoint(output_dir, config.resume)
    if checkpoint is not None:
        accelerator.load_state(str(checkpoint))
        start_step = json.loads((checkpoint / STATE_NAME).read_text())["step"]
        log.info("resumed from %s at step %d", checkpoint, start_step)

    identities = None
    if config.governance is not None:
        names = [folder.name for folder in identity_folders(config.data_dir)]
        decided = [consented_identities(config.governance, names, config.actor) if accelerator.is_main_process else None]
        identities = broadcast_object_list(decided)[0]
    else:
        log.warning("no governance config: training identities are not checked for training consent")
    dataset = IdentityDataset(
        scan_identity_folders(config.data_dir, models.face_identity, identities), models.tokenizer, models.feature_extractor,
        config.resolution, config.num_references, models.adapter.config.identity_token,
    )
    accumulation = config.gradient_accumulation_steps
    loader = DataLoader(dataset, num_workers=config.num_workers, batch_sampler=StepBatchSampler(
        len(dataset), config.batch_size, config.seed, start_step * accumulation, config.max_steps * accumulation,
        accelerator.process_index,
    ))
    if config.report_to:
        accelerator.init_trackers("idadapter", config=config.model_dump(mode="json"))
    log_file = output_dir / "train_log.jsonl"
    params = trainable_parameters(models.adapter, models.unet)
    step = start_step
    progress = tqdm(total=config.max_steps, initial=start_step, desc="training", unit="step",
                    disable=not accelerator.is_local_main_process)
    for micro_step, batch in enumerate(loader, start=start_step * accumulation):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        generator = torch.Generator(accelerator.device).manual_seed(
            _step_seed(config.seed, micro_step, accelerator.process_index))
        with accelerator.accumulate(unet, adapter):
            losses = training_losses(models, batch, generator, config.identity_loss_weight, unet, adapter)
            accelerator.backward(losses["loss"])
            if accelerator.sync_gradients and config.max_grad_norm:
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue
        step += 1
        values = {k: float(v.detach()) for k, v in losses.items()}
        progress.update(1)
        progress.set_postfix(loss=f"{values['loss']:.4f}")
        if step % config.log_every == 0 or step == config.max_steps:
            accelerator.log(values, step=step)
            if accelerator.is_main_process:
                with log_file.open("a") as handle:
                    handle.write(json.dumps({"step": step, **values}) + "\n")
        if step % config.checkpoint_every == 0 or step == config.max_steps:
            checkpoint_dir = output_dir / f"{CHECKPOINT_PREFIX}{step}"
            accelerator.save_state(str(checkpoint_dir))
            if accelerator.is_main_process:
                (checkpoint_dir / STATE_NAME).write_text(json.dumps({"step": step}) + "\n")
    progress.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        save_adapter(output_dir, models.adapter, models.unet)
    accelerator.end_training()
    return output_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="idadapter.train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a TOML or JSON file with TrainConfig's fields")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = TrainConfig.from_file(args.config)
        train(config)
    except (FileNotFoundError, ValueError) as error:
        print(f"idadapter.train: {error}", file=sys.stderr)
        return 2
    print(f"adapter written to {config.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
