"""IDAdapter at the true Stable Diffusion 2.1 shape (random weights): training-step time and peak memory
at batch 4 (bf16, SDPA), and the time to sample 5 images x 50 steps with and without the adapter.

    pytest benchmarks/test_bench_idadapter.py -m "gpu and benchmark" -s

And on the CPU, the paired identity-loss experiment (docs/idadapter.md): two trainings of the 64 px
model on identical batches, one with λ·L_id and a λ ≈ 0 control, compared on L_id.

    IDADAPTER_PAIRED_STEPS=300 pytest benchmarks/test_bench_idadapter.py -m benchmark -k paired -s

Goals: <= 0.35 s per training step on an H100 (50k steps in under 5 hours) and an adapter sampling
overhead <= 15 %. Nothing is asserted about time; the figures and whether each goal is met go to
benchmarks/results/idadapter_<device>.json. Random weights give no faces in x̂0, so the identity loss
is measured with landmarks fixed on the ArcFace template (detection still runs): the full L_id path.
"""
import json
import os
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from eval.faces.align import ALIGNED_SIZE, ARCFACE_TEMPLATE
from idadapter.identity_loss import FaceIdentity
from idadapter.pipeline import IDAdapterPipeline
from idadapter.testing import random_adapter, sd21_shaped_pipeline
from idadapter.parameters import trainable_parameters
from idadapter.training import TrainConfig, training_losses, training_models

pytestmark = pytest.mark.benchmark


def gpu(test):
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")(test))

RESULTS_DIR = Path(__file__).parent / "results"
PHOTO = Path(__file__).resolve().parents[1] / "eval" / "demo" / "faces" / "ardern_2018.jpg"
BATCH, RESOLUTION, WARMUP, TIMED = 4, 768, 3, 10
STEP_GOAL_S, OVERHEAD_GOAL = 0.35, 0.15


class TemplateFaces(FaceIdentity):
    """Every image 'has' a face on the ArcFace template, scaled to the image: the full L_id cost."""

    def landmarks(self, images):
        super().landmarks(images)  # the detection cost stays in the timing
        return [ARCFACE_TEMPLATE * (images.shape[-1] / ALIGNED_SIZE)] * len(images)


def device_slug() -> str:
    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")


def record(section: str, values: dict) -> None:
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"idadapter_{device_slug()}.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    results.update(device=torch.cuda.get_device_name(), torch=torch.__version__, **{section: values})
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\n{section}: {json.dumps(values)}")


def synthetic_batch(models, device) -> dict:
    generator = torch.Generator(device).manual_seed(0)
    prompt = "a photo of a woman smiling, woman is sks"
    ids = models.tokenizer([prompt] * BATCH, padding="max_length", max_length=77, return_tensors="pt").input_ids
    return {
        "pixel_values": torch.rand(BATCH, 3, RESOLUTION, RESOLUTION, generator=generator, device=device) * 2 - 1,
        "reference_pixel_values": torch.randn(BATCH, 4, 3, 224, 224, generator=generator, device=device),
        "identity_feature": torch.nn.functional.normalize(torch.randn(BATCH, 128, generator=generator, device=device), dim=-1),
        "input_ids": ids.to(device),
    }


@gpu
@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_training_step_time_and_peak_memory(gradient_checkpointing):
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    config = TrainConfig(base="(random SD 2.1 shape)", data_dir="-", output_dir="-",
                         gradient_checkpointing=gradient_checkpointing)
    face_identity = TemplateFaces(FaceIdentity.from_register("sface").recognizer)
    models = training_models(sd21_shaped_pipeline("cuda", torch.bfloat16), face_identity, config, device, torch.bfloat16)
    params = trainable_parameters(models.adapter, models.unet)
    optimizer = torch.optim.Adam(params, lr=config.learning_rate, fused=True)
    batch = synthetic_batch(models, device)
    generator = torch.Generator(device).manual_seed(1)
    torch.cuda.reset_peak_memory_stats()
    times = []
    try:
        for step in range(WARMUP + TIMED):
            torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                losses = training_losses(models, batch, generator, config.identity_loss_weight)
            losses["loss"].backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize()
            if step >= WARMUP:
                times.append(time.perf_counter() - start)
    except torch.OutOfMemoryError as error:
        record(f"training_step_checkpointing_{gradient_checkpointing}", {"error": f"out of memory: {error}"[:300]})
        return
    seconds = float(np.median(times))
    record(f"training_step_checkpointing_{gradient_checkpointing}", {
        "batch": BATCH, "resolution": RESOLUTION, "dtype": "bf16", "attention": "SDPA",
        "median_s_per_step": round(seconds, 4), "hours_for_50k_steps": round(seconds * 50_000 / 3600, 2),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
        "faces_in_identity_loss": float(losses["faces"]), "goal_s_per_step": STEP_GOAL_S,
        "goal_met": seconds <= STEP_GOAL_S,
    })


@gpu
def test_sampling_overhead_of_the_adapter():
    pipe = sd21_shaped_pipeline("cuda", torch.float16)
    pipe.set_progress_bar_config(disable=True)
    adapter = random_adapter(pipe, gate=0.5, mff_heads=16).to("cuda", torch.float16)
    pipeline = IDAdapterPipeline(pipe, adapter, FaceIdentity.from_register("sface").to("cuda"))
    photo = Image.open(PHOTO).convert("RGB")

    def seconds(scale: float) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        pipeline(photo, "a photo of a woman on a beach", class_noun="woman", adapter_scale=scale,
                 num_images_per_prompt=5, num_inference_steps=50, generator=torch.Generator("cuda").manual_seed(0),
                 output_type="np")
        torch.cuda.synchronize()
        return time.perf_counter() - start

    seconds(1.0), seconds(0.0)  # warm-up
    plain = min(seconds(0.0) for _ in range(2))
    with_adapter = min(seconds(1.0) for _ in range(2))
    overhead = with_adapter / plain - 1
    record("sampling_5_images_50_steps", {
        "resolution": RESOLUTION, "dtype": "fp16", "guidance_scale": 7.5,
        "plain_s": round(plain, 3), "adapter_s": round(with_adapter, 3), "overhead": round(overhead, 4),
        "goal_overhead": OVERHEAD_GOAL, "goal_met": overhead <= OVERHEAD_GOAL,
    })


PAIRED_STEPS = int(os.environ.get("IDADAPTER_PAIRED_STEPS", "300"))
PAIRED_IDENTITIES = {"obama": ["obama_flag.jpg", "obama_oval.jpg", "obama_podium.jpg", "obama_senate.jpg"],
                     "macron": ["macron_2014.jpg", "macron_2025.jpg"], "ardern": ["ardern_2018.jpg", "ardern_2022.jpg"]}
CONTROL_WEIGHT = 1e-6  # L_id is still computed and logged, but has no say in the update


def paired_run(tmp_path, base, data, vae, face_identity, weight: float, steps: int):
    from accelerate.utils import set_seed

    from idadapter.base import load_base_pipeline
    from idadapter.train import train

    config = TrainConfig(base=str(base), data_dir=str(data), output_dir=str(tmp_path / f"lambda-{weight:g}"),
                         resolution=64, mff_heads=4, learning_rate=1e-3, batch_size=4, max_steps=steps,
                         checkpoint_every=10**6, log_every=1, identity_loss_weight=weight, mixed_precision="no",
                         num_workers=0, gradient_checkpointing=False, seed=3)
    set_seed(config.seed)  # the same initial adapter in both runs
    pipe = load_base_pipeline(base)
    pipe.vae = vae
    models = training_models(pipe, face_identity, config, torch.device("cpu"), torch.float32)
    train(config, models)
    log = [json.loads(line) for line in (Path(config.output_dir) / "train_log.jsonl").read_text().splitlines()]
    return models, log


def fixed_batch_identity_loss(models, dataset, batches: int = 16) -> list[float]:
    """L_id of the trained adapter on fixed batches, noise and timesteps (the same for every adapter)."""
    from torch.utils.data import DataLoader

    from idadapter.data import StepBatchSampler

    loader = DataLoader(dataset, batch_sampler=StepBatchSampler(len(dataset), 4, seed=10_007, start_step=0,
                                                                total_steps=batches))
    values = []
    with torch.no_grad():
        for index, batch in enumerate(loader):
            losses = training_losses(models, batch, torch.Generator().manual_seed(50_000 + index), 1.0)
            values.append(float(losses["loss_id"]))
    return values


def mean_and_standard_error(values) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def test_paired_identity_loss_experiment_against_a_control(tmp_path):
    """λ·L_id against a λ ≈ 0 control, same batches, noise, timesteps and initial adapter."""
    from idadapter.data import IdentityDataset, scan_identity_folders
    from idadapter.testing import face_crops, face_vae, tiny_pipeline

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    faces = Path(__file__).resolve().parents[1] / "eval" / "demo" / "faces"
    face_identity = FaceIdentity.from_register("sface")
    data = tmp_path / "data"
    for identity, files in PAIRED_IDENTITIES.items():
        (data / identity).mkdir(parents=True)
        for name, crop in zip(files, face_crops([faces / n for n in files], face_identity=face_identity)):
            crop.save(data / identity / name)
    vae = face_vae([Image.open(p).convert("RGB") for p in sorted(data.glob("*/*.jpg"))], steps=60)
    tiny_pipeline(tmp_path / "base")
    weight = TrainConfig(base="-", data_dir="-", output_dir="-").identity_loss_weight
    runs = {w: paired_run(tmp_path, tmp_path / "base", data, vae, face_identity, w, PAIRED_STEPS)
            for w in (weight, CONTROL_WEIGHT)}
    dataset = IdentityDataset(scan_identity_folders(data, face_identity), runs[weight][0].tokenizer,
                              runs[weight][0].feature_extractor, 64, 4)
    fixed = {w: fixed_batch_identity_loss(models, dataset) for w, (models, _) in runs.items()}
    logs = {w: log for w, (_, log) in runs.items()}
    second_half = slice(PAIRED_STEPS // 2, None)
    trained = [a["loss_id"] - b["loss_id"] for a, b in zip(logs[weight][second_half], logs[CONTROL_WEIGHT][second_half])]
    paired = np.subtract(fixed[weight], fixed[CONTROL_WEIGHT])
    values = {
        "steps": PAIRED_STEPS, "lambda": weight, "control_lambda": CONTROL_WEIGHT, "learning_rate": 1e-3,
        "batch": 4, "resolution": 64, "identity_timesteps": list(TrainConfig.model_fields["identity_timesteps"].default),
        "faces_per_image_in_training": {f"{w:g}": sum(e["faces"] for e in log) / sum(e["images"] for e in log)
                                        for w, log in logs.items()},
        "training_loss_id_difference_second_half": mean_and_standard_error(trained),
        "fixed_batch_loss_id": {f"{w:g}": mean_and_standard_error(v) for w, v in fixed.items()},
        "fixed_batch_loss_id_difference": mean_and_standard_error(paired),
        "fixed_batches": "16 batches of the training set, noise and timesteps fixed, the same for both adapters",
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "idadapter_paired_identity_loss_cpu.json").write_text(json.dumps(values, indent=2) + "\n")
    print(f"\npaired identity-loss experiment: {json.dumps(values)}")
