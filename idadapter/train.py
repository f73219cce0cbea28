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
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from torch.utils.data import DataLoader
from tqdm import tqdm

from .data import IdentityDataset, StepBatchSampler, identity_folders, scan_identity_folders
from .parameters import parameter_counts, trainable_parameters
from .training import TrainConfig, TrainingModels, load_training_models, training_losses
from .weights import load_adapter_weights, save_adapter

log = logging.getLogger("idadapter.train")
CHECKPOINT_PREFIX = "checkpoint-"
STATE_NAME = "trainer_state.json"


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


class IntervalMeans:
    """Loss values summed over the micro-batches since the last log line; faces and images are counts."""

    COUNTS = ("faces",)

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.batches = 0
        self.images = 0

    def add(self, losses: dict[str, torch.Tensor], images: int) -> None:
        for key, value in losses.items():
            self.sums[key] = self.sums.get(key, 0) + value.detach().float()
        self.batches += 1
        self.images += images

    def values(self, accelerator: Accelerator) -> dict[str, float]:
        """Means over the interval and over processes (counts: totals)."""
        device = accelerator.device
        totals = {k: accelerator.reduce(v.to(device), "sum") for k, v in self.sums.items()}
        batches = accelerator.reduce(torch.tensor(float(self.batches), device=device), "sum")
        values = {k: float(v if k in self.COUNTS else v / batches) for k, v in totals.items()}
        values["images"] = float(accelerator.reduce(torch.tensor(float(self.images), device=device), "sum"))
        return values


def train(config: TrainConfig, models: TrainingModels | None = None) -> Path:
    """Run (or resume) training; returns the folder holding the final adapter.

    `models` (from `training.training_models`) are the models to train, loaded from `config.base` when
    not given; they are trained in place."""
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=config.report_to, project_dir=str(output_dir),
    )
    set_seed(config.seed)
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    models = models or load_training_models(config, accelerator.device, weight_dtype)
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
    elif accelerator.is_main_process:
        log.warning("no governance config: training identities are not checked for training consent")
    dataset = IdentityDataset(
        scan_identity_folders(config.data_dir, models.face_identity, identities), models.tokenizer, models.feature_extractor,
        config.resolution, config.num_references, models.adapter.config.identity_token,
        models.adapter.config.reference_crop_scale,
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
    interval = IntervalMeans()
    step = start_step
    progress = tqdm(total=config.max_steps, initial=start_step, desc="training", unit="step",
                    disable=not accelerator.is_local_main_process)
    for micro_step, batch in enumerate(loader, start=start_step * accumulation):
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        generator = torch.Generator(accelerator.device).manual_seed(
            _step_seed(config.seed, micro_step, accelerator.process_index))
        with accelerator.accumulate(unet, adapter):
            losses = training_losses(models, batch, generator, config.identity_loss_weight, unet, adapter,
                                     config.identity_timesteps)
            interval.add(losses, len(batch["pixel_values"]))
            accelerator.backward(losses["loss"])
            if accelerator.sync_gradients and config.max_grad_norm:
                accelerator.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue
        step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{float(losses['loss'].detach()):.4f}")
        if step % config.log_every == 0 or step == config.max_steps:
            values, interval = interval.values(accelerator), IntervalMeans()
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
        print(f"adapter written to {output_dir}")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
