"""What there is to review in one run: its images by manifest line, the A/B pairs, the gate verdicts.

Built once at start-up from the same run the report reads (`eval.report.run.load_run`). Images are
addressed by manifest line only; a file is served only when it lies inside the run's own folder.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from itertools import combinations
from pathlib import Path
from typing import Any

from eval.files import sha256_file
from eval.report.gates import GateResult, GateSpec, evaluate_gates
from eval.report.governance_checks import check_governance
from eval.report.run import ReviewRun, RunError, load_run, read_scores_dir

SCORE_COLUMNS_HIDDEN = ("system", "subject", "prompt", "prompt_category", "seed", "image", "references", "line",
                        "face_crop")
SIGN_ACTION = "provenance.sign"


class CatalogError(ValueError):
    pass


@dataclass(frozen=True)
class ReviewItem:
    line: int
    system: str
    subject: str
    prompt: str
    prompt_category: str
    seed: int | None
    image: Path
    references: tuple[Path, ...]
    sha256: str  # "sha256:<hex>", the audit log's name for the file
    copy_paste: bool | None
    scores: dict[str, Any]  # every automatic score column, for the approver only


@dataclass(frozen=True)
class Pair:
    pair_id: str  # "<lower line>-<higher line>"
    first: ReviewItem
    second: ReviewItem


@dataclass
class Catalog:
    run_id: str
    run: ReviewRun
    items: dict[int, ReviewItem]
    pairs: dict[str, Pair]
    gates: dict[str, list[GateResult]]  # system -> its verdicts (eval.report.gates)
    sampler_actors: set[str] = field(default_factory=set)  # who generated the run (audit log / manifest)

    def item(self, line: int) -> ReviewItem | None:
        return self.items.get(line)


def _inside(folder: Path, relative: str) -> Path:
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise CatalogError(f"{relative}: outside the run folder {folder}")
    return path


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return None if value is None or value != value else value


def _items(run: ReviewRun) -> dict[int, ReviewItem]:
    items = {}
    for row in run.scores.to_dict("records"):
        image = _inside(run.manifest_dir, row["image"])
        references = tuple(_inside(run.manifest_dir, ref) for ref in json.loads(row["references"]))
        seed = _plain(row.get("seed"))
        items[int(row["line"])] = ReviewItem(
            line=int(row["line"]), system=str(row["system"]), subject=str(row["subject"]), prompt=str(row["prompt"]),
            prompt_category=str(row["prompt_category"]), seed=None if seed is None else int(seed), image=image,
            references=references, sha256="sha256:" + sha256_file(image) if image.is_file() else "sha256:missing",
            copy_paste=_plain(row.get("copy_paste")),
            scores={key: _plain(value) for key, value in row.items() if key not in SCORE_COLUMNS_HIDDEN})
    return items


def _pairs(items: dict[int, ReviewItem], systems: list[tuple[str, str]] | None) -> dict[str, Pair]:
    """Outputs with the same subject, prompt and seed from two systems; `systems` None: every pair of systems."""
    groups: dict[tuple, dict[str, ReviewItem]] = {}
    for item in sorted(items.values(), key=lambda i: i.line):
        if item.seed is not None:
            groups.setdefault((item.subject, item.prompt, item.seed), {}).setdefault(item.system, item)
    names = sorted({item.system for item in items.values()})
    wanted = systems if systems is not None else list(combinations(names, 2))
    for a, b in wanted:
        for name in (a, b):
            if name not in names:
                raise CatalogError(f"A/B pair {a}:{b}: no system {name!r} in the run (systems: {', '.join(names)})")
    pairs = {}
    for by_system in groups.values():
        for a, b in wanted:
            if a in by_system and b in by_system:
                first, second = sorted((by_system[a], by_system[b]), key=lambda i: i.line)
                pair_id = f"{first.line}-{second.line}"
                pairs[pair_id] = Pair(pair_id, first, second)
    return pairs


def sampler_actors(run: ReviewRun, items: dict[int, ReviewItem], context) -> set[str]:
    """Who ran the sampler for this run: the actor of each image's provenance.sign audit entry, and a
    `generator.actor` in the manifest when the generator wrote one."""
    digests = {item.sha256 for item in items.values()}
    actors = {entry["actor"] for entry in (context.audit_log.entries() if context is not None else [])
              if entry.get("action") == SIGN_ACTION and entry.get("outcome") == "ok" and entry.get("object") in digests}
    manifest = Path(run.summary.get("manifest") or "")
    if manifest.is_file():
        for text in manifest.read_text().splitlines():
            try:
                actor = (json.loads(text).get("generator") or {}).get("actor")
            except (json.JSONDecodeError, AttributeError):
                continue  # the harness reported the bad line when it scored the run
            if isinstance(actor, str) and actor:
                actors.add(actor)
    return actors


def _scores_dir(source: Path, progress: bool) -> Path:
    if source.is_dir() and not (source / "summary.json").is_file():
        source = source / "scores" if (source / "scores" / "summary.json").is_file() else source / "manifest.jsonl"
    if source.is_file():
        from eval.score import score_manifest

        return score_manifest(source, progress=progress).out_dir
    if not source.is_dir():
        raise RunError(f"{source}: no such manifest, scores folder or run folder")
    return source


def load_review_run(source: str | Path, *, progress: bool = True) -> ReviewRun:
    """The run at `source` (manifest, scores folder or run folder; a manifest is scored first, through the
    cache). Every system is reviewed, so no candidate need be chosen; governance comes with the catalog."""
    scores_dir = _scores_dir(Path(source), progress)
    _, summary = read_scores_dir(scores_dir)
    return load_run(scores_dir, system=next(iter(summary["systems"])), with_governance=False, progress=progress)


def build_catalog(run: ReviewRun, spec: GateSpec, context, *, pairs: list[tuple[str, str]] | None = None) -> Catalog:
    """`context`: the governance workspace (GovernanceContext) whose consent, provenance and audit log
    the gates and the approvals use."""
    items = _items(run)
    if context is not None:
        checks = check_governance(context, run.scores["subject"].unique(),
                                  [(item.system, item.image) for item in items.values()], source=str(context.config))
        run = replace(run, governance=checks)
    gates = {system: evaluate_gates(spec, replace(run, candidate=system)) for system in run.systems}
    return Catalog(run_id=run.name, run=run, items=items, pairs=_pairs(items, pairs), gates=gates,
                   sampler_actors=sampler_actors(run, items, context))
