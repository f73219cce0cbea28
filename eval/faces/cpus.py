"""How many threads the face core's models may use: the CPUs this process was given, not the machine's.

Two Ray actors on a 2-core node each sized their pools by the machine's cores and slowed each other
down (2 workers ran at 0.98x the speed of one); Ray gives every actor ``OMP_NUM_THREADS``.
"""
import os


def cpu_budget() -> int:
    """``OMP_NUM_THREADS`` when it is a positive integer, else the CPUs this process may run on."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
