"""The parts of `python -m eval.score`: cached face analysis, metric families, summary."""


class MetricUnavailable(RuntimeError):
    """A metric cannot be computed on this machine; the message says exactly what to provide."""


class BuildsModelOnFirstUse:
    """A scorer whose models are cached properties named in `lazy`: pickled without them (what a Ray
    actor gets), so each actor builds its own on first use."""

    lazy: tuple[str, ...] = ()

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key not in self.lazy}
