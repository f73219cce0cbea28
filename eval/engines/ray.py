"""The Ray engine: the images the cache lacks, analysed on a Ray cluster with Ray Data.

The driver cuts the misses into blocks of one batch (image paths, or the image bytes when the
workers cannot see the driver's files) and puts them in the object store one block at a time, so it
never holds all images. `map_batches` runs them through `FaceWorker`, a callable class holding one
FaceAnalyzer per actor (a pool of `workers` actors, each with `num_gpus`), which runs exactly the
local engine's code on its batch; records stream back batch by batch, and the driver alone writes
the cache. Ray restarts a dead actor and retries its batch (Ray Data's defaults: `max_restarts=-1`,
`max_task_retries=-1`), and the face core is deterministic, so a retried batch gives the same records.
CLIP's image embeddings and Face Div's set distances then run as their own stages (`map_stage`,
`StageWorker`), with their own batch sizes and actors.
"""
from __future__ import annotations

import itertools
import logging
import pickle
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from eval.engines import TRANSPORTS
from eval.engines.records import AnalyzerSpec, records_table, table_records
from eval.faces import FaceAnalyzer, FaceInputError
from eval.faces.images import read_image_bytes
from eval.scoring.analysis import CachedFaceAnalysis, ImageChanged, LocalFaceEngine, Miss


def _namespaces(analyzer: FaceAnalyzer) -> dict[str, str]:
    from eval.cache import ResultCache

    driver = CachedFaceAnalysis(analyzer, ResultCache(None))
    return {"faces": driver.faces_namespace, **driver.embed_namespaces}


class FaceWorker:
    """One FaceAnalyzer per Ray actor; a batch of misses (paths or bytes) in, encoded records out."""

    def __init__(self, spec: AnalyzerSpec, namespaces: dict[str, str]):
        analyzer = spec.build()
        if _namespaces(analyzer) != namespaces:  # other weights on this node would put foreign records in the cache
            raise RuntimeError(f"this worker's models differ from the driver's: {_namespaces(analyzer)} != {namespaces}")
        self.engine = LocalFaceEngine(analyzer)
        self.recognizers = list(spec.recognizers)

    def __call__(self, batch: pa.Table) -> pa.Table:
        misses = [Miss(Path(path), sha256) for path, sha256 in zip(batch.column("path").to_pylist(),
                                                                   batch.column("sha256").to_pylist())]
        with tempfile.TemporaryDirectory(prefix="idavatar-ray-") as folder:
            results = self.engine.analyze(_readable_here(misses, batch, folder))
        return records_table(batch.column("index"), results, self.recognizers)


def _readable_here(misses: list[Miss], batch: pa.Table, folder: str) -> list[Miss]:
    """The misses, read from their paths, or, when the batch carries their bytes, from private
    files in `folder` holding those bytes (read and verified as local ones)."""
    if "data" not in batch.column_names:
        return misses
    local = []
    for position, (miss, data) in enumerate(zip(misses, batch.column("data").to_pylist())):
        path = Path(folder) / f"{position}{miss.path.suffix}"
        path.write_bytes(data)
        local.append(Miss(path, miss.sha256))
    return local


class StageWorker:
    """A scoring stage other than the face core (CLIP's image embeddings, a Face Div scorer's set
    distances) on a Ray actor: `function` is a bound method of a light scorer object whose model
    loads on the actor's first batch and stays for the actor's life. Items and outputs travel
    pickled (numpy arrays keep their exact floats); `Miss` items travel by path or with their bytes."""

    def __init__(self, function: Callable[[list], list]):
        self.function = function

    def __call__(self, batch: pa.Table) -> pa.Table:
        items = [pickle.loads(item) for item in batch.column("item").to_pylist()]
        with tempfile.TemporaryDirectory(prefix="idavatar-ray-") as folder:
            outputs = self.function(_readable_here(items, batch, folder))
        return pa.table({"index": batch.column("index"),
                         "output": pa.array([pickle.dumps(output) for output in outputs], type=pa.binary())})


def cluster_is_local() -> bool:
    """True when every node of the connected cluster runs on this machine (it can read our paths)."""
    import ray

    if ray.util.client.ray.is_connected():
        return False
    here = ray.util.get_node_ip_address()
    return all(node["NodeManagerAddress"] == here for node in ray.nodes() if node["Alive"])


def _bytes_or_empty(path: Path) -> bytes:
    """What the worker gets for an image the driver can no longer read: nothing, which it reports as
    an image changed since hashing (never cached)."""
    try:
        return read_image_bytes(path)
    except FaceInputError:
        return b""


class RayEngine:
    """Analyses misses on Ray. `address`: None starts a private local cluster (stopped by `close`);
    "auto" or "ray://HOST:PORT" joins a running one. `transport`: "path" when workers share the
    driver's filesystem, "bytes" otherwise, "auto" detects it. Embeddings of already-cached faces
    (a recognizer added or changed) are computed on the driver, as the local engine does."""

    def __init__(self, analyzer: FaceAnalyzer, address: str | None = None, workers: int = 1,
                 gpus_per_worker: float = 0.0, batch_size: int = 8, transport: str = "auto"):
        if transport not in TRANSPORTS:
            raise ValueError(f"transport {transport!r}: expected one of {TRANSPORTS}")
        if workers < 1 or batch_size < 1 or gpus_per_worker < 0:
            raise ValueError("--workers and --batch-size must be at least 1, --gpus-per-worker at least 0")
        self.analyzer, self.address, self.workers = analyzer, address, workers
        self.gpus_per_worker, self.batch_size, self.transport = gpus_per_worker, batch_size, transport
        self._local = LocalFaceEngine(analyzer)
        self._started = False

    def _connect(self) -> None:
        import ray

        if not ray.is_initialized():
            if self.address is None:
                ray.init(address="local", num_cpus=self.workers, include_dashboard=False, log_to_driver=False)
                self._started = True
            else:
                ray.init(address=self.address, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False  # the driver shows one tqdm bar
        logging.getLogger("ray.data").setLevel(logging.WARNING)

    def _by_bytes(self) -> bool:
        return self.transport == "bytes" or (self.transport == "auto" and not cluster_is_local())

    @staticmethod
    def _block(start: int, columns: dict, misses: list[Miss] | None):
        """One batch in the object store (one block per batch: any idle actor can take it), with
        the misses' bytes when `misses` is given."""
        import ray

        size = len(next(iter(columns.values())))
        columns = {"index": pa.array(range(start, start + size), type=pa.int64()), **columns}
        if misses is not None:
            columns["data"] = pa.array([_bytes_or_empty(m.path) for m in misses], type=pa.binary())
        return ray.put(pa.table(columns))

    def _map(self, worker: type, args: tuple, blocks: list, batch_size: int) -> Iterator[pa.Table]:
        import ray.data

        dataset = ray.data.from_arrow_refs(blocks).map_batches(
            worker, fn_constructor_args=args, batch_format="pyarrow", batch_size=batch_size,
            compute=ray.data.ActorPoolStrategy(size=self.workers), num_cpus=1, num_gpus=self.gpus_per_worker or None,
        )
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")

    def analyze_chunks(self, misses: list[Miss],
                       size: int | None = None) -> Iterator[list[tuple[Miss, dict, dict[str, np.ndarray]]]]:
        """(miss, face record, embeddings) per miss, one Ray batch at a time, in the order batches
        finish (`size` is the local engine's chunking; here the batch size governs)."""
        if not misses:
            return
        self._connect()
        by_bytes = self._by_bytes()
        blocks = [self._block(start, {"path": [str(m.path) for m in chunk], "sha256": [m.sha256 for m in chunk]},
                              chunk if by_bytes else None)
                  for start in range(0, len(misses), self.batch_size) if (chunk := misses[start : start + self.batch_size])]
        recognizers = list(self.analyzer.recognizers)
        args = (AnalyzerSpec.of(self.analyzer), _namespaces(self.analyzer))
        for table in self._map(FaceWorker, args, blocks, self.batch_size):
            yield [(misses[index], face, vectors) for index, face, vectors in table_records(table, recognizers)]

    def map_stage(self, function: Callable[[list], list], items: Iterable,
                  batch_size: int) -> Iterator[list[tuple[int, object]]]:
        """Another scoring stage as its own Ray Data stage, with its own batch size and actors:
        (item position, output) pairs, a batch at a time, in the order batches finish."""
        items = iter(items)
        chunk = list(itertools.islice(items, batch_size))
        if not chunk:  # nothing to do (all cached): no cluster started or joined
            return
        self._connect()
        by_bytes = self._by_bytes()
        blocks, start = [], 0
        while chunk:
            misses = chunk if by_bytes and all(isinstance(item, Miss) for item in chunk) else None
            blocks.append(self._block(start, {"item": pa.array([pickle.dumps(item) for item in chunk], pa.binary())},
                                      misses))
            start += len(chunk)
            chunk = list(itertools.islice(items, batch_size))
        for table in self._map(StageWorker, (function,), blocks, batch_size):
            yield list(zip(table.column("index").to_pylist(),
                           (pickle.loads(output) for output in table.column("output").to_pylist())))

    def analyze(self, misses: list[Miss]) -> list[tuple[dict, dict[str, np.ndarray]]]:
        found = {miss: (face, vectors) for chunk in self.analyze_chunks(misses) for miss, face, vectors in chunk}
        return [found[miss] for miss in misses]

    def embed(self, name: str, misses: list[Miss], faces: dict[str, dict]) -> list[np.ndarray | ImageChanged]:
        return self._local.embed(name, misses, faces)

    def close(self) -> None:
        import ray

        if self._started:
            ray.shutdown()
            self._started = False
