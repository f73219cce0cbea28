"""The local engine's scoring stages: batches side by side, in order, each torch batch on one thread,
so the numbers are the ones a one-CPU Ray worker computes."""
import threading
import time

import numpy as np
import torch

from eval.faces.cpus import cpu_budget
from eval.scoring import torch_inference
from eval.scoring.analysis import map_in_process, map_in_threads
from eval.scoring.face_features import FaceFeatures


def test_threaded_batches_come_back_in_order_and_read_ahead_a_bounded_amount():
    taken, first_alone, active, peak = [], [], [0], [0]
    lock = threading.Lock()

    def items():
        for item in range(100):
            taken.append(item)
            yield item

    def work(batch):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        if batch[0] == 0:
            first_alone.append(active[0] == 1 and len(taken) <= 7)
        time.sleep(0.002)
        with lock:
            active[0] -= 1
        return [item * 2 for item in batch]

    chunks = map_in_threads(work, items(), 7)
    first = next(chunks)
    assert first == [(i, 2 * i) for i in range(7)] and first_alone == [True]
    assert len(taken) <= 7 * (2 * cpu_budget() + 2)  # no more batches read than are running or waiting
    rest = [pair for chunk in chunks for pair in chunk]
    assert first + rest == [pair for chunk in map_in_process(lambda b: [i * 2 for i in b], range(100), 7) for pair in chunk]
    assert peak[0] <= cpu_budget()


def test_face_div_sets_are_the_same_bits_side_by_side_as_alone(real_crops):
    features = FaceFeatures()
    threads = torch.get_num_threads()
    sets = [np.stack(real_crops[start : start + 4]) for start in (0, 3, 6)] * 8
    alone = [features.distance_matrix(list(crops)) for crops in sets[:3]]
    side_by_side = [pair for chunk in map_in_threads(features.set_distances, sets, 1) for pair in chunk]
    assert torch.get_num_threads() == threads  # given back after the last batch
    assert [position for position, _ in side_by_side] == list(range(24))
    assert all(np.array_equal(matrix, alone[position % 3]) for position, matrix in side_by_side)
    with torch_inference():
        assert torch.get_num_threads() == 1


def test_every_thread_computes_on_one_thread_inside_torch_inference():
    """torch's thread count is per thread (OpenMP): each entry sets its own, whatever else runs."""
    seen = []

    def stage():
        torch.set_num_threads(2)  # this thread's own setting, as a pool thread may have it
        with torch_inference():
            seen.append(torch.get_num_threads())

    with torch_inference():  # another stage's batch is inside already
        thread = threading.Thread(target=stage)
        thread.start()
        thread.join()
    assert seen == [1]
