"""IDAdapter at the true Stable Diffusion 2.1 shape (random weights): training-step time and peak memory
at batch 4 (bf16, SDPA), and the time to sample 5 images x 50 steps with and without the adapter.

    pytest benchmarks/test_bench_idadapter.py -m "gpu and benchmark" -s

Goals: <= 0.35 s per training step on an H100 (50k steps in under 5 hours) and an adapter sampling
overhead <= 15 %. Nothing is asserted about time; the figures and whether each goal is met go to
benchmarks/results/idadapter_<device>.json. Random weights give no faces in x̂0, so the identity loss
is measured with landmarks fixed on the ArcFace template (detection still runs): the full L_id path.
"""
import json
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

pytestmark = [
    pytest.mark.gpu, pytest.mark.benchmark,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
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
