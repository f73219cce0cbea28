"""The embedded engine: the driver's own analyzer, in this process, one chunk at a time."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tqdm import tqdm

from eval.engines.records import ImageRecords, analyse
from eval.faces import FaceAnalyzer

CHUNK = 64  # images per face-core call; the driver commits each chunk to the cache as it comes


class LocalEngine:
    name = "local"

    def analyse(self, analyzer: FaceAnalyzer, paths: list[Path], hashes: list[str],
                progress: bool = False) -> Iterator[list[ImageRecords]]:
        with tqdm(total=len(paths), desc="faces", unit="img", disable=not progress) as bar:
            for start in range(0, len(paths), CHUNK):
                yield analyse(analyzer, paths[start : start + CHUNK], hashes[start : start + CHUNK])
                bar.update(len(paths[start : start + CHUNK]))

    def close(self) -> None:
        pass
