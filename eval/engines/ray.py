"""The Ray engine: the images the cache lacks, analysed on a Ray cluster with Ray Data.

The driver cuts the misses into blocks (image paths, or the image bytes when the workers cannot see
the driver's files) and puts them in the object store one block at a time, so it never holds all
images. `map_batches` runs them through `FaceWorker`, a callable class holding one FaceAnalyzer per
actor (a pool of `workers` actors, each with `num_gpus`); records stream back block by block and the
driver alone writes the cache. Ray restarts a dead actor and retries its batch (Ray Data's defaults:
`max_restarts=-1`, `max_task_retries=-1`), and the face core is deterministic, so a retried batch
gives the same records.
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from eval.engines import TRANSPORTS
from eval.engines.records import AnalyzerSpec, ImageRecords, analyse
from eval.faces import FaceAnalyzer



class FaceWorker:
    """One FaceAnalyzer per Ray actor; a batch of paths or bytes in, encoded cache records out."""

    def __init__(self, spec: AnalyzerSpec, namespaces: dict[str, str]):
        from eval.cache import ResultCache
        from eval.scoring.analysis import CachedFaceAnalysis

        self.analyzer = spec.build()
        mine = CachedFaceAnalysis(self.analyzer, ResultCache(None))
        found = {"faces": mine.faces_namespace, **mine.embed_namespaces}
        if found != namespaces:  # other weights on this node would put foreign records in the cache
            raise RuntimeError(f"this worker's models differ from the driver's: {found} != {namespaces}")
        self.recognizers = list(spec.recognizers)

    def __call__(self, batch: pa.Table) -> pa.Table:
        hashes = batch.column("sha256").to_pylist()
        with tempfile.TemporaryDirectory(prefix="idavatar-ray-") as folder:
            if "data" in batch.column_names:  # the face core reads files: bytes become a private copy
                paths = []
                for index, (name, data) in enumerate(zip(batch.column("path").to_pylist(),
                                                         batch.column("data").to_pylist())):
                    paths.append(Path(folder) / f"{index}{Path(name).suffix}")
                    paths[-1].write_bytes(data)
            else:
                paths = [Path(p) for p in batch.column("path").to_pylist()]
            records = analyse(self.analyzer, paths, hashes)
        rows = [record.to_columns(self.recognizers) for record in records]
        columns = {"index": batch.column("index")}
        columns.update({key: pa.array([row[key] for row in rows], type=pa.string() if key == "sha256" else pa.binary())
                        for key in rows[0]} if rows else {})
        return pa.table(columns)


def cluster_is_local() -> bool:
    """True when every node of the connected cluster runs on this machine (it can read our paths)."""
    import ray

    if ray.util.client.ray.is_connected():
        return False
    here = ray.util.get_node_ip_address()
    return all(node["NodeManagerAddress"] == here for node in ray.nodes() if node["Alive"])


class RayEngine:
    """`address`: None starts a private local cluster (stopped by `close`); "auto" or "ray://HOST:PORT"
    joins a running one. `transport`: "path" when workers share the driver's filesystem, "bytes"
    otherwise, "auto" detects it."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int = 1, gpus_per_worker: float = 0.0,
                 batch_size: int = 8, transport: str = "auto"):
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r}: expected one of {TRANSPORTS}")
        if workers < 1 or batch_size < 1 or gpus_per_worker < 0:
            raise ValueError("workers and batch size must be at least 1, GPUs per worker at least 0")
        self.address, self.workers, self.gpus_per_worker = address, workers, gpus_per_worker
        self.batch_size, self.transport = batch_size, transport
        self._started = False

    def _connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        if self.address is None:
            ray.init(address="local", num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
            self._started = True
        else:
            ray.init(address=self.address, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False  # the driver shows one tqdm bar
        logging.getLogger("ray.data").setLevel(logging.WARNING)

    def _by_bytes(self) -> bool:
        return self.transport == "bytes" or (self.transport == "auto" and not cluster_is_local())

    def _blocks(self, paths: list[Path], hashes: list[str]) -> list:
        import ray

        by_bytes = self._by_bytes()
        blocks = []
        for start in range(0, len(paths), self.batch_size):  # one block per batch: any idle actor can take it
            chunk = paths[start : start + self.batch_size]
            columns = {"index": pa.array(range(start, start + len(chunk)), type=pa.int64()),
                       "path": [str(p) for p in chunk], "sha256": hashes[start : start + len(chunk)]}
            if by_bytes:
                columns["data"] = pa.array([p.read_bytes() for p in chunk], type=pa.binary())
            blocks.append(ray.put(pa.table(columns)))
        return blocks

    def analyse(self, analyzer: FaceAnalyzer, paths: list[Path], hashes: list[str],
                progress: bool = False) -> Iterator[list[ImageRecords]]:
        """The records of `paths`, in the order their batches finish."""
        if not paths:
            return
        import ray.data

        from eval.cache import ResultCache
        from eval.scoring.analysis import CachedFaceAnalysis

        self._connect()
        driver = CachedFaceAnalysis(analyzer, ResultCache(None))
        namespaces = {"faces": driver.faces_namespace, **driver.embed_namespaces}
        recognizers = list(analyzer.recognizers)
        dataset = ray.data.from_arrow_refs(self._blocks(paths, hashes)).map_batches(
            FaceWorker, fn_constructor_args=(AnalyzerSpec.of(analyzer), namespaces), batch_format="pyarrow",
            batch_size=self.batch_size, compute=ray.data.ActorPoolStrategy(size=self.workers), num_cpus=1,
            num_gpus=self.gpus_per_worker or None,
        )
        with tqdm(total=len(paths), desc=f"faces (ray, {self.workers} workers)", unit="img",
                  disable=not progress) as bar:
            for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                rows = table.to_pylist()
                yield [ImageRecords.from_columns(row, recognizers) for row in rows]
                bar.update(len(rows))

    def close(self) -> None:
        import ray

        if self._started:
            ray.shutdown()
            self._started = False

