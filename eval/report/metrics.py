"""Names, directions and definitions of the metrics in `summary.json` (see docs/contracts.md)."""
from __future__ import annotations

LABELS = {
    "face_detect_rate": "Face detection rate",
    "multi_face_rate": "Multi-face rate",
    "expr_div": "Expr-Div",
    "pose_div_yaw": "Pose-Div (yaw)",
    "pose_div_pitch": "Pose-Div (pitch)",
    "face_div_lpips": "Face Div (LPIPS)",
    "clip_t": "CLIP-T",
    "clip_i": "CLIP-I",
    "copy_paste_rate": "Copy-paste rate",
}
LOWER_IS_BETTER = frozenset({"copy_paste_rate", "multi_face_rate"})
# Set-level diversity metrics, plotted against identity in the report's scatter.
DIVERSITY_METRICS = ("pose_div_yaw", "pose_div_pitch", "expr_div", "face_div_lpips")


def metric_label(key: str) -> str:
    if key.startswith("id_sim_"):
        return f"ID-Sim ({key.removeprefix('id_sim_')})"
    return LABELS.get(key, key)


def headline_metrics(summary: dict) -> list[str]:
    """The metric keys of a summary in reading order: identity first, then the rest as in LABELS."""
    present = {key for system in summary["systems"].values() for key in system.get("metrics", {})}
    identity = [f"id_sim_{r}" for r in summary.get("recognizers", [])]
    others = [key for key in LABELS if key in present]
    extra = sorted(present - set(identity) - set(others))
    return identity + others + extra


# The methods section: what each metric measures and the published protocol it follows.
METHODS = [
    ("ID-Sim", "Mean similarity between the main face of each output and the subject's reference face(s), "
     "one column per recognizer (cosine for SFace/ArcFace; 1 - d/1.2 for dlib's L2 distance, so its "
     "0.6 distance threshold maps to 0.5). Judged by several recognizers, and flagged where the generator "
     "was trained with one, because a recognizer used in training is not an independent judge.",
     "IDAdapter (Cui et al., 2024) ID-Sim; PuLID (Guo et al., 2024) evaluates with several recognizers"),
    ("Face detection rate / multi-face rate", "Share of outputs with at least one detected face; share "
     "with more than one (scored on the largest face).", "PhotoMaker (Li et al., 2024) face detection rate"),
    ("Expr-Div", "Diversity of facial expression across a system's outputs for a subject, from a 7-class "
     "FER classifier (share of outputs whose expression differs from the reference's).",
     "IDAdapter (Cui et al., 2024)"),
    ("Pose-Div", "Mean absolute difference of head yaw / pitch (degrees) between each output and its "
     "reference.", "IDAdapter (Cui et al., 2024)"),
    ("Face Div", "Mean LPIPS distance between the aligned face crops of a subject's outputs.",
     "PhotoMaker (Li et al., 2024); IDAdapter (Cui et al., 2024)"),
    ("CLIP-T / CLIP-I", "CLIP ViT-L/14 cosine similarity of the output to its prompt (T) and to the "
     "reference image (I).", "PhotoMaker (Li et al., 2024); IDAdapter (Cui et al., 2024)"),
    ("Copy-paste rate", "Share of outputs that are near-copies of a reference: identity above the "
     "copy-paste similarity and pose and expression unchanged.", "PuLID (Guo et al., 2024) copy-paste analysis"),
    ("95% CI", "Bootstrap percentile interval over subjects (the unit that varies), from the harness.",
     "-"),
]
