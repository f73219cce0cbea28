"""ONNX graphs the face core builds from shipped weights (SFace folded to fp32, dlib's ResNet), kept
in the user cache folder under the source file's sha256 and the builder's version.

Building them costs about 0.7 s (importing onnx alone is 0.45 s), in every process that embeds a
face: each Ray actor and each cold run. A process that finds the graph reads it back instead. The
file is the graph's sha256 followed by the graph, written whole and moved into place (`write_atomic`):
a torn, truncated or altered file fails the check and is rebuilt; a cache folder that cannot be
written only means building every time.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from eval.files import write_atomic
from eval.models import file_sha256, user_cache_dir

DIGEST_SIZE = 32


def graph_path(version: str, source: Path) -> Path:
    return user_cache_dir() / "graphs" / f"{version}-{file_sha256(source)[:16]}.onnx"


def built_graph(version: str, source: Path, build: Callable[[Path], bytes]) -> bytes:
    """`build(source)`, or the graph a previous call stored for this source and version (`version`
    names the builder's code: change it whenever `build` changes what it makes)."""
    path = graph_path(version, source)
    try:
        stored = path.read_bytes()
        if hashlib.sha256(stored[DIGEST_SIZE:]).digest() == stored[:DIGEST_SIZE]:
            return stored[DIGEST_SIZE:]
    except OSError:
        pass
    graph = build(source)
    try:
        write_atomic(path, lambda partial: partial.write_bytes(hashlib.sha256(graph).digest() + graph))
    except OSError:
        pass
    return graph
