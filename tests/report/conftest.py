"""Shared runs for the report tests: a synthetic run whose values the tests chose, and the demo.

The demo is built and scored once per process (eval.report.run memoises it), in the same place
`make demo` uses, so the report tests and `pytest benchmarks/` share it and the harness's cache.

The synthetic run follows docs/contracts.md, made from the bundled photos with chosen scores: the
report and the gates read only the contract, so a run whose true values the test chose is the
sharpest check of what they show. Real photos, real crops, real bootstrap intervals."""
from __future__ import annotations

import json
import shutil
from itertools import cycle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from eval.outputs import new_run_id, publish_scores_set
from eval.report.gates import load_gate_spec
from eval.report.run import load_run
from eval.stats import bootstrap_ci

PHOTOS = sorted((Path(__file__).resolve().parents[2] / "eval" / "demo" / "faces").glob("*.jpg"))
RECOGNIZERS = ("sface", "dlib")
THRESHOLDS = {"sface": 0.36, "dlib": 0.5}


def _interval(values) -> dict | None:
    interval = bootstrap_ci(values)
    return None if interval is None else interval.as_dict()


def _metrics(rows: pd.DataFrame) -> tuple[dict, dict]:
    ok = rows[rows["status"].isin(["ok", "multi_face"])]
    metrics = {f"id_sim_{r}": _interval(ok[f"id_sim_{r}"]) for r in RECOGNIZERS}
    metrics["face_detect_rate"] = _interval(rows["status"].isin(["ok", "multi_face"]).astype(float))
    metrics["multi_face_rate"] = _interval((rows["status"] == "multi_face").astype(float))
    metrics["expr_div"] = _interval(ok["expr_changed"].astype(float))
    metrics["pose_div_yaw"] = _interval(ok["d_yaw"].abs())
    metrics["pose_div_pitch"] = _interval(ok["d_pitch"].abs())
    metrics["copy_paste_rate"] = _interval(ok["copy_paste"].astype(float))
    metrics["face_div_lpips"] = None
    metrics["clip_t"] = None
    unavailable = {"face_div_lpips": "LPIPS backbone alexnet-owt-7be5be79.pth not found",
                   "clip_t": "CLIP weights openai/clip-vit-large-patch14 not installed"}
    return metrics, unavailable


def write_synthetic_run(folder: Path, systems: dict[str, dict], n_per_system: int = 8, seed: int = 0,
                        prompts: list[tuple[str, str]] | None = None) -> Path:
    """Write images, crops, scores.parquet and summary.json under `folder`; return the scores folder.

    `systems[name]` gives the mean `id_sim`, `expr_changed` share, `yaw` spread and `copy_paste` share
    of that system's images; `failures` lists statuses to give its first images."""
    rng = np.random.default_rng(seed)
    prompts = prompts or [("a photo of a person", "identity"), ("a person, smiling", "expression"),
                          ("a person as an oil painting <b>bold</b>", "style")]
    images_dir, scores_dir = folder / "images", folder / "scores"
    crops_dir = scores_dir / "crops"
    for path in (images_dir, crops_dir, folder / "refs"):
        path.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PHOTOS[0], folder / "refs" / "reference.jpg")
    rows = []
    photos = cycle(PHOTOS)
    for system, spec in systems.items():
        failures = list(spec.get("failures", []))
        for index in range(n_per_system):
            photo = next(photos)
            subject = f"subject{index % 3}"
            image = f"images/{system}_{index:04d}.jpg"
            prompt, category = prompts[index % len(prompts)]
            status = failures[index] if index < len(failures) else "ok"
            if status == "error":
                (folder / image).write_bytes(b"not an image")
            else:
                shutil.copyfile(photo, folder / image)
            crop = None
            if status in ("ok", "multi_face"):
                crop = f"crops/{system}_{index:04d}.png"
                with Image.open(photo) as source:
                    side = min(source.size)
                    source.convert("RGB").crop((0, 0, side, side)).resize((112, 112)).save(scores_dir / crop)
            scored = status in ("ok", "multi_face")
            changed = bool(rng.random() < spec["expr_changed"])
            rows.append({
                "system": system, "subject": subject, "prompt": prompt, "prompt_category": category,
                "seed": index, "image": image, "references": json.dumps(["refs/reference.jpg"]),
                "status": status, "error": {"error": "cannot read image: not an image",
                                            "no_face": "no face detected"}.get(status),
                "n_faces": {"ok": 1, "multi_face": 2, "no_face": 0}.get(status, 0),
                **{f"id_sim_{r}": float(np.clip(spec["id_sim"] + rng.normal(0, 0.05), -1, 1)) if scored else None
                   for r in RECOGNIZERS},
                "expr_label": ("happy" if changed else "neutral") if scored else None,
                "ref_expr_label": "neutral" if scored else None,
                "expr_changed": changed if scored else None,
                "yaw": None, "pitch": None, "roll": None,
                "d_yaw": float(rng.normal(0, spec["yaw"])) if scored else None,
                "d_pitch": float(rng.normal(0, spec["yaw"] / 2)) if scored else None,
                "copy_paste": bool(rng.random() < spec["copy_paste"]) if scored else None,
                "clip_t": None, "clip_i": None, "face_crop": crop,
            })
    scores = pd.DataFrame(rows)
    summary = {"manifest": str(folder / "manifest.jsonl"), "created": "2026-11-27T00:00:00Z",
               "recognizers": list(RECOGNIZERS), "thresholds": THRESHOLDS, "trained_with": {},
               "models": [{"id": "sface"}, {"id": "dlib"}, {"id": "arcface"}], "systems": {}}
    for system, group in scores.groupby("system", sort=False):
        metrics, unavailable = _metrics(group)
        by_category = {}
        for category, sub in group.groupby("prompt_category"):
            sub_metrics, sub_unavailable = _metrics(sub)
            by_category[category] = {"n_images": len(sub), "metrics": sub_metrics, "unavailable": sub_unavailable}
        summary["systems"][system] = {"n_images": len(group), "metrics": metrics, "unavailable": unavailable,
                                      "by_category": by_category}
    (folder / "manifest.jsonl").write_text("")
    publish_scores_set(scores_dir, scores, summary, new_run_id())  # as eval.score writes a set
    return scores_dir


CANDIDATE = {"id_sim": 0.62, "expr_changed": 0.7, "yaw": 14.0, "copy_paste": 0.0,
             "failures": ["no_face", "error", "multi_face"]}
BASELINE = {"id_sim": 0.45, "expr_changed": 0.4, "yaw": 9.0, "copy_paste": 0.0}


@pytest.fixture(scope="session")
def gate_spec():
    return load_gate_spec()


@pytest.fixture(scope="session")
def make_synthetic_run():
    return write_synthetic_run


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("synthetic"), {"candidate": CANDIDATE, "baseline": BASELINE},
                               n_per_system=12)


@pytest.fixture(scope="session")
def synthetic_run(synthetic_dir):
    return load_run(synthetic_dir, system="candidate", progress=False)


@pytest.fixture(scope="session")
def demo_run():
    return load_run(None, progress=False)
