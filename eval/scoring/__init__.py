"""The parts of `python -m eval.score`: cached face analysis, metric families, summary."""
from contextlib import contextmanager


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed on this machine; the message says exactly what to provide."""


@contextmanager
def torch_inference():
    """torch's inference mode, on one thread. Its convolutions sum in an order that depends on the
    thread count (EfficientNet features move by ~1e-7 between 1 and 2 threads), and a result must not
    depend on the machine: a cached embedding, a Ray worker's (one CPU each) and this process's are
    the same bits, so summaries agree digit for digit. The local engine runs batches side by side
    instead (`map_in_threads`). torch's count (OpenMP's and MKL's) belongs to the calling thread, so
    each entry sets its own and gives it back."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            yield
    finally:
        torch.set_num_threads(before)


class BuildsModelOnFirstUse:
    """A scorer whose models are cached properties named in `lazy`: pickled without them (what a Ray
    actor gets), so each actor builds its own on first use."""

    lazy: tuple[str, ...] = ()

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key not in self.lazy}
