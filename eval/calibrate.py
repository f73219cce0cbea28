"""Recognizer calibration: `python -m eval.calibrate FOLDER [--target-far 0.01] [--out calibration.json]`.

FOLDER holds one sub-folder per identity. Every pair of photos with a face is a genuine pair (same
sub-folder) or an impostor pair; per recognizer the ROC (scikit-learn) gives the similarity threshold
at the target false-accept rate. The threshold sits midway between the lowest accepted score and
the next lower one, so it reproduces the achieved FAR/FRR on these photos without resting on one of
them. With few photos the achievable FAR values are coarse steps of 1/n_impostor: the file records
the FAR and FRR actually achieved beside the target.

The JSON (and a ROC plot PNG beside it) is what `eval.score --thresholds` and the gates read.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from eval.cache import CacheError, open_cache
from eval.files import read_json, write_text_atomic

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}
DEFAULT_TARGET_FAR = 0.01


def load_thresholds(path: str | Path) -> dict[str, float]:
    """{recognizer: threshold} from a calibration JSON; raises ValueError naming the file on bad content."""
    path = Path(path)
    try:
        data = read_json(path)
        thresholds = {name: entry["threshold"] for name, entry in data["recognizers"].items()}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, KeyError, TypeError, AttributeError,
            ValueError) as error:
        raise ValueError(f"{path}: not a calibration file ({type(error).__name__}: {error})") from None
    return {name: finite_threshold(value, f"{path}: the threshold of {name}") for name, value in thresholds.items()}


def finite_threshold(value, what: str) -> float:
    """`value` as a float; ValueError naming `what` unless it is a finite number (not a bool, not NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{what} is {value!r}, not a finite number")
    return float(value)


def identity_images(folder: Path) -> list[tuple[str, Path]]:
    """(identity, image) for every image in the immediate sub-folders of `folder`."""
    found = [(sub.name, image) for sub in sorted(p for p in folder.iterdir() if p.is_dir())
             for image in sorted(sub.iterdir()) if image.suffix.lower() in IMAGE_SUFFIXES]
    if len({identity for identity, _ in found}) < 2:
        raise ValueError(f"{folder}: needs at least two identity sub-folders with images")
    return found


def operating_point(genuine: np.ndarray, impostor: np.ndarray, target_far: float) -> dict:
    from sklearn.metrics import roc_auc_score, roc_curve

    labels = np.r_[np.ones(len(genuine)), np.zeros(len(impostor))]
    scores = np.r_[genuine, impostor]
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    index = int(np.flatnonzero(fpr <= target_far)[-1])
    upper = thresholds[index]
    lower = thresholds[index + 1] if index + 1 < len(thresholds) else None
    if not np.isfinite(upper):
        threshold = float(np.nextafter(lower, np.inf))
    elif lower is None:
        threshold = float(upper)
    else:  # midway, unless the two scores are too close for a float between them
        threshold = float((upper + lower) / 2) if lower < (upper + lower) / 2 else float(upper)
    return {
        "threshold": threshold,
        "target_far": target_far,
        "far": float(np.mean(impostor >= threshold)),
        "frr": float(np.mean(genuine < threshold)),
        "auc": float(roc_auc_score(labels, scores)),
        "n_genuine": int(len(genuine)),
        "n_impostor": int(len(impostor)),
        "roc": {"fpr": fpr.round(6).tolist(), "tpr": tpr.round(6).tolist(),
                "thresholds": [None if not np.isfinite(t) else round(float(t), 6) for t in thresholds]},
        "scores": {"genuine": np.round(genuine, 6).tolist(), "impostor": np.round(impostor, 6).tolist()},
    }


def plot_roc(calibration: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (axes, spread) = plt.subplots(1, 2, figsize=(10, 4.5), dpi=120)
    names = list(calibration["recognizers"])
    for position, name in enumerate(names):
        entry = calibration["recognizers"][name]
        line, = axes.plot(entry["roc"]["fpr"], entry["roc"]["tpr"], drawstyle="steps-post",
                          label=f"{name} (AUC {entry['auc']:.3f}, t={entry['threshold']:.3f})")
        axes.plot(entry["far"], 1 - entry["frr"], "o", color=line.get_color())
        for offset, kind, marker in ((-0.12, "genuine", "o"), (0.12, "impostor", "x")):
            values = entry["scores"][kind]
            spread.plot([position + offset] * len(values), values, marker, color=line.get_color(), alpha=0.7,
                        linestyle="none", label=f"{name} {kind}")
        spread.hlines(entry["threshold"], position - 0.3, position + 0.3, color=line.get_color(), linestyle="--")
    axes.axvline(calibration["target_far"], color="grey", linestyle=":", label=f"target FAR {calibration['target_far']}")
    axes.set(xlabel="false accept rate", ylabel="true accept rate", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02),
             title=f"ROC: {calibration['n_genuine_pairs']} genuine / {calibration['n_impostor_pairs']} impostor pairs")
    axes.legend(loc="lower right", fontsize=8)
    spread.set_xticks(range(len(names)), names)
    spread.set(ylabel="similarity", title="pair similarities (o genuine, x impostor; -- threshold)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def calibrate_folder(folder: str | Path, out_path: str | Path | None = None, *,
                     target_far: float = DEFAULT_TARGET_FAR, analyzer=None, cache=None,
                     progress: bool = True) -> dict:
    """Calibrate every recognizer of `analyzer` on FOLDER; write the JSON and ROC PNG; return the dict."""
    from eval.faces import FaceAnalyzer, similarity
    from eval.scoring.analysis import CachedFaceAnalysis, default_recognizers, fingerprint

    folder = Path(folder)
    out_path = Path(out_path) if out_path is not None else folder / "calibration.json"
    analyzer = analyzer or FaceAnalyzer(recognizers=default_recognizers())
    faces = CachedFaceAnalysis(analyzer, open_cache(cache))
    labelled = identity_images(folder)
    records = faces.analyze([image for _, image in labelled], progress=progress)
    usable = [(identity, records[image]) for identity, image in labelled if records[image].has_face]
    skipped = [{"image": str(image.relative_to(folder)), "reason": records[image].error or "no face"}
               for _, image in labelled if not records[image].has_face]
    pairs = list(itertools.combinations(usable, 2))
    same = np.array([a[0] == b[0] for a, b in pairs])
    if not same.any() or same.all():
        raise ValueError(f"{folder}: needs both genuine and impostor pairs (got {same.sum()} / {(~same).sum()})")
    calibration = {
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "folder": str(folder.resolve()),
        "target_far": target_far,
        "n_images": len(usable),
        "n_identities": len({identity for identity, _ in usable}),
        "n_genuine_pairs": int(same.sum()),
        "n_impostor_pairs": int((~same).sum()),
        "skipped": skipped,
        "recognizers": {},
    }
    for name, recognizer in analyzer.recognizers.items():
        scores = np.array([similarity(name, a[1].embeddings[name], b[1].embeddings[name]) for a, b in pairs])
        entry = operating_point(scores[same], scores[~same], target_far)
        entry["models"] = fingerprint(recognizer.model_ids)
        calibration["recognizers"][name] = entry
    write_text_atomic(out_path, json.dumps(calibration, indent=2))
    calibration["roc_plot"] = str(plot_roc(calibration, out_path.with_suffix(".png")))
    return calibration


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a folder of identity sub-folders")
    parser.add_argument("--target-far", type=float, default=DEFAULT_TARGET_FAR)
    parser.add_argument("--out", type=Path, help="calibration JSON (default FOLDER/calibration.json)")
    parser.add_argument("--cache", type=Path, help="cache file (default: the user cache)")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        parser.error(f"{args.folder}: not a folder")
    if not 0 < args.target_far < 1:
        parser.error(f"--target-far {args.target_far}: must lie strictly between 0 and 1")
    try:
        calibration = calibrate_folder(args.folder, args.out, target_far=args.target_far, cache=args.cache)
    except (ValueError, OSError, CacheError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for skipped in calibration["skipped"]:
        print(f"skipped {skipped['image']}: {skipped['reason']}", file=sys.stderr)
    print(f"{calibration['n_images']} images, {calibration['n_identities']} identities, "
          f"{calibration['n_genuine_pairs']} genuine / {calibration['n_impostor_pairs']} impostor pairs")
    for name, entry in calibration["recognizers"].items():
        print(f"{name}: threshold {entry['threshold']:.4f} at target FAR {entry['target_far']} "
              f"(achieved FAR {entry['far']:.3f}, FRR {entry['frr']:.3f}, AUC {entry['auc']:.3f})")
    print(f"wrote {args.out or args.folder / 'calibration.json'} and {calibration['roc_plot']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
