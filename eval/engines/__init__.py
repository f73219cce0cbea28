"""Engines that analyse the images a run's result cache lacks.

`local` runs the face core in this process (the default, and what `make demo` uses); `ray` runs it on
a Ray cluster (eval/engines/ray.py). Both hand back the same records for the same images, chunk by
chunk; the driver alone writes the cache and the outputs. See docs/eval.md, "Scaling out".
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from eval.engines.records import ImageRecords
from eval.faces import FaceAnalyzer

ENGINES = ("local", "ray")
TRANSPORTS = ("auto", "path", "bytes")  # how images reach Ray workers


class Engine(Protocol):
    name: str

    def analyse(self, analyzer: FaceAnalyzer, paths: list[Path], hashes: list[str],
                progress: bool = False) -> Iterator[list[ImageRecords]]:
        """The records of the images at `paths` (content hashes `hashes`), a chunk at a time."""

    def close(self) -> None:
        """Release what the engine started (a private Ray cluster)."""


def make_engine(name: str = "local", **ray_options) -> Engine:
    """`make_engine("ray", address=..., workers=..., gpus_per_worker=..., batch_size=..., transport=...)`."""
    if name == "local":
        if ray_options:
            raise ValueError(f"options {sorted(ray_options)} apply to the ray engine only")
        from eval.engines.local import LocalEngine

        return LocalEngine()
    if name == "ray":
        from eval.engines.ray import RayEngine

        return RayEngine(**ray_options)
    raise ValueError(f"unknown engine {name!r}; expected one of {ENGINES}")
