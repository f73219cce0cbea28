"""The parts of `python -m eval.score`: cached face analysis, metric families, summary."""


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed on this machine; the message says exactly what to provide."""
