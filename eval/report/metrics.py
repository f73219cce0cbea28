"""Names, directions and definitions of the metrics in `summary.json` (see docs/contracts.md)."""
from __future__ import annotations

LABELS = {
    "face_detect_rate": "Face detection rate",
    "multi_face_rate": "Multi-face rate",
    "expr_div": "Expr-Div",
    "pose_div_yaw": "Pose-Div (yaw)",
    "pose_div_pitch": "Pose-Div (pitch)",
    "face_div_lpips": "Face Div (LPIPS)",
    "face_div_features": "Face Div (features, not LPIPS)",
    "clip_t": "CLIP-T",
    "clip_i": "CLIP-I",
    "copy_paste_rate": "Copy-paste rate",
}
LOWER_IS_BETTER = frozenset({"copy_paste_rate", "multi_face_rate"})
# Set-level diversity metrics, plotted against identity in the report's scatter.
DIVERSITY_METRICS = ("pose_div_yaw", "pose_div_pitch", "expr_div", "face_div_lpips", "face_div_features")


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


# The methods section: what each metric measures (as eval/ computes it) and the published protocol it follows.
METHODS = [
    ("ID-Sim", "Similarity between the main (largest) face of each output and the subject's reference, per "
     "recognizer: cosine for SFace/ArcFace, 1 - d/1.2 from dlib's L2 distance d (its 0.6 distance threshold "
     "maps to 0.5). Several references are averaged. Each recognizer's same-person threshold comes from the "
     "calibration. A recognizer used to train the generator is flagged: it is not an independent judge.",
     "IDAdapter (Cui et al., 2024) ID-Sim; PuLID (Guo et al., 2024) judges with several recognizers"),
    ("Face detection rate / multi-face rate", "Share of readable outputs with a detected face; share with "
     "more than one (those are scored on the largest face and counted here).",
     "PhotoMaker (Li et al., 2024) face detection rate"),
    ("Expr-Div", "Share of outputs whose expression (7-class FER classifier) differs from the reference's.",
     "IDAdapter (Cui et al., 2024)"),
    ("Pose-Div (yaw, pitch)", "Mean absolute difference of head yaw / pitch, in degrees, between each output "
     "and its reference.", "IDAdapter (Cui et al., 2024)"),
    ("Face Div", "Mean pairwise LPIPS distance between the aligned face crops within each subject x prompt "
     "set of a system.", "PhotoMaker (Li et al., 2024); IDAdapter (Cui et al., 2024)"),
    ("Face Div (features, not LPIPS)", "The same mean over pairs on channel-normalised EfficientNet-Lite0 "
     "stage outputs (ImageNet weights shipped in a pip package), LPIPS's recipe without its learned layer. "
     "Not LPIPS: another backbone and scale, never comparable with published LPIPS figures; shown because "
     "LPIPS needs a user-supplied AlexNet file.", "this suite (eval/scoring/face_features.py)"),
    ("CLIP-T / CLIP-I", "CLIP ViT-L/14 cosine similarity of each output to its prompt (T) and to the "
     "reference image (I).", "PhotoMaker (Li et al., 2024); IDAdapter (Cui et al., 2024)"),
    ("Copy-paste rate", "Share of outputs that are near-copies of the reference: ID-Sim at the top of the scale "
     "on every recognizer (run's copy_paste_rule) and head pose within a few degrees of the reference's.",
     "PuLID (Guo et al., 2024) and IDAdapter (Cui et al., 2024): identity bought by copying the reference"),
    ("95% CI", "Percentile bootstrap of the mean over the images (over subject x prompt sets for Face Div), "
     "fixed seed. Baseline comparisons pair the same subject, prompt and seed; significant when the CI of "
     "the difference excludes 0.", "eval/stats.py"),
]
