"""Engines that analyse the images a run's result cache lacks.

`local` runs the face core in this process (`eval.scoring.analysis.LocalFaceEngine`: the default, and
what `make demo` uses); `ray` runs it on a Ray cluster (eval/engines/ray.py). Both hand back the same
records for the same images, chunk by chunk; the driver alone writes the cache and the outputs.
See docs/eval.md, "Scaling out".
"""
from __future__ import annotations

from eval.faces import FaceAnalyzer

ENGINES = ("local", "ray")
TRANSPORTS = ("auto", "path", "bytes")  # how images reach Ray workers


def make_engine(name: str, analyzer: FaceAnalyzer, **ray_options):
    """`make_engine("ray", analyzer, address=..., workers=..., gpus_per_worker=..., batch_size=..., transport=...)`."""
    if name == "local":
        if ray_options:
            raise ValueError(f"options {sorted(ray_options)} apply to the ray engine only")
        from eval.scoring.analysis import LocalFaceEngine

        return LocalFaceEngine(analyzer)
    if name == "ray":
        from eval.engines.ray import RayEngine

        return RayEngine(analyzer, **ray_options)
    raise ValueError(f"unknown engine {name!r}; expected one of {ENGINES}")
