"""What travels between the driver and a Ray worker: how to build the analyzer, and the records.

Records travel as the result cache's own byte encoding (JSON header + raw array bytes, never
pickled), so the driver stores exactly the floats the worker computed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from eval.cache import decode, encode
from eval.faces import FaceAnalyzer


@dataclass(frozen=True)
class AnalyzerSpec:
    """How to build, in another process, an analyzer equal to the driver's."""

    recognizers: tuple[str, ...]
    min_face_size: int
    with_pose: bool
    with_expression: bool

    @classmethod
    def of(cls, analyzer: FaceAnalyzer) -> AnalyzerSpec:
        return cls(tuple(analyzer.recognizers), analyzer.min_face_size, analyzer.mesh is not None,
                   analyzer.expression is not None)

    def build(self) -> FaceAnalyzer:
        return FaceAnalyzer(self.recognizers, min_face_size=self.min_face_size, with_pose=self.with_pose,
                            with_expression=self.with_expression)


def records_table(index: pa.Array, results: list[tuple[dict, dict[str, np.ndarray]]],
                  recognizers: list[str]) -> pa.Table:
    """One row per image: its position in the dispatch, its face record, one embedding per recognizer."""
    columns = {"index": index, "faces": pa.array([encode(face) for face, _ in results], type=pa.binary())}
    for name in recognizers:
        columns[f"embed_{name}"] = pa.array(
            [encode({"vector": vectors[name]}) if name in vectors else None for _, vectors in results],
            type=pa.binary())
    return pa.table(columns)


def table_records(table: pa.Table, recognizers: list[str]) -> list[tuple[int, dict, dict[str, np.ndarray]]]:
    """(index, face record, {recognizer: embedding}) per row of a `records_table`."""
    out = []
    for row in table.to_pylist():
        vectors = {name: decode(row[f"embed_{name}"])["vector"] for name in recognizers
                   if row[f"embed_{name}"] is not None}
        out.append((row["index"], decode(row["faces"]), vectors))
    return out
