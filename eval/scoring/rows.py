"""Manifest lines to score rows: paths checked, statuses set, identity / pose / expression filled in,
and the table typed as docs/contracts.md describes."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from eval.manifest import Manifest
from eval.scoring.analysis import ImageRecord
from eval.scoring.identity import id_similarities, is_copy_paste, reference_profile

FACE_STATUSES = ("ok", "multi_face")


def inside(root: Path, relative: str) -> Path:
    try:
        path = (root / relative).resolve()
    except (RuntimeError, OSError) as error:  # a symbolic-link loop (RuntimeError before Python 3.13)
        raise ValueError(f"{relative}: cannot resolve the path ({error})") from None
    if not path.is_relative_to(root.resolve()):
        raise ValueError(f"{relative} resolves outside the manifest's folder (symbolic link?)")
    return path


def manifest_rows(manifest: Manifest) -> tuple[list[dict], list[Path | None], list[list[Path]]]:
    """One row per parsed line (status `error` until scored), with its image and reference paths."""
    rows, images, references = [], [], []
    for entry, line in zip(manifest.entries, manifest.lines):
        row = {"line": line, "system": entry.system, "subject": entry.subject, "prompt": entry.prompt,
               "prompt_category": entry.prompt_category, "seed": entry.seed, "image": entry.image,
               "references": json.dumps(entry.references), "status": "error", "error": None, "n_faces": 0}
        try:
            image, refs = inside(manifest.root, entry.image), [inside(manifest.root, ref) for ref in entry.references]
        except ValueError as error:  # neither is scored: the lists stay one entry per row
            row["error"] = str(error)
            image, refs = None, []
        images.append(image)
        references.append(refs)
        rows.append(row)
    return rows, images, references


def score_identity(row: dict, image: ImageRecord, references: list[ImageRecord], recognizers: list[str]) -> None:
    row["n_faces"] = image.n_faces
    if not image.readable:
        row["error"] = image.error or "cannot read image"
        return
    try:
        reference = reference_profile(references, recognizers)
    except ValueError as error:
        row["error"] = f"reference: {error}"
        return
    if not image.has_face:
        row["status"], row["error"] = "no_face", image.error or "no face detected"
        return
    row["status"] = "multi_face" if image.n_faces > 1 else "ok"
    similarities = id_similarities(image, reference)
    row.update({f"id_sim_{name}": value for name, value in similarities.items()})
    row.update(expr_label=image.expression, ref_expr_label=reference.expression,
               yaw=image.yaw, pitch=image.pitch, roll=image.roll)
    if image.expression and reference.expression:
        row["expr_changed"] = image.expression != reference.expression
    if image.yaw is not None and reference.yaw is not None:
        row["d_yaw"], row["d_pitch"] = image.yaw - reference.yaw, image.pitch - reference.pitch
    row["copy_paste"] = is_copy_paste(similarities, row.get("d_yaw"), row.get("d_pitch"))


KEY_TEXT = ["system", "subject", "prompt", "prompt_category", "image", "references", "status"]  # never missing
OPTIONAL_TEXT = ["error", "expr_label", "ref_expr_label", "face_crop", "run_id"]
TYPES = {"line": "Int64", "seed": "Int64", "n_faces": "Int64", "expr_changed": "boolean", "copy_paste": "boolean",
         "error": "string", "expr_label": "string", "ref_expr_label": "string"}
FLOATS = ["yaw", "pitch", "roll", "d_yaw", "d_pitch", "clip_t", "clip_i"]


def typed_table(rows: list[dict], recognizers: list[str]) -> pd.DataFrame:
    identity = [f"id_sim_{name}" for name in recognizers]
    columns = ["line", "system", "subject", "prompt", "prompt_category", "seed", "image", "references", "status",
               "error", "n_faces", *identity, "expr_label", "ref_expr_label", "expr_changed", "yaw", "pitch",
               "roll", "d_yaw", "d_pitch", "copy_paste", "clip_t", "clip_i"]
    types = {**TYPES, **{column: float for column in [*identity, *FLOATS]}}
    return pd.DataFrame(rows).reindex(columns=columns).astype(types)


def read_scores_csv(path: Path) -> pd.DataFrame:
    """scores.csv typed as `typed_table` types it: text exactly as written (a prompt "NA", "null" or "1"
    stays that string), an empty field missing only where a value may be missing."""
    header = pd.read_csv(path, nrows=0).columns
    text = {column: str for column in [*KEY_TEXT, *OPTIONAL_TEXT] if column in header}
    missing = {column: [""] for column in header if column not in KEY_TEXT}
    table = pd.read_csv(path, dtype=text, keep_default_na=False, na_values=missing)
    numbers = {column: float for column in header if column.startswith("id_sim_") or column in FLOATS}
    return table.astype({**{c: t for c, t in TYPES.items() if c in header}, **numbers})
