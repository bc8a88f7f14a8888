"""The peak of live tensor memory over a stretch of training, on CPU as on CUDA: what torch.cuda.max_memory_allocated
reports on a GPU. On CPU the process's resident set also holds the interpreter and libraries and whatever glibc's
heap keeps after frees (a long backward leaves freed blocks between live ones), so it cannot show how close a
model of tensor memory comes; this can. The tensors alive at the start are summed once (every storage the garbage
collector can reach: weights, 4-bit quant states, adapter, gradients, optimizer state), and from then on PyTorch's
profiler reports each allocation and free of the CPU allocator, kernel workspaces included; their running sum's
highest point above the start, plus the start, is the peak. Used by `peftkit plan --measure` (training.probe).
"""

from __future__ import annotations

import gc
import os
import warnings
from contextlib import contextmanager

import torch
from torch.profiler import ProfilerActivity, profile


def live_tensor_bytes(device: str = "cpu") -> int:
    """Bytes of the distinct storages of every tensor on `device` that the garbage collector can reach."""
    seen, total = set(), 0
    with warnings.catch_warnings():  # isinstance() on some deprecated torch objects warns
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            if not isinstance(obj, torch.Tensor) or obj.device.type != device:
                continue
            try:
                storage = obj.untyped_storage()
            except (RuntimeError, NotImplementedError):  # sparse and other storage-less layouts
                continue
            if storage.data_ptr() and storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


@contextmanager
def _stderr_quiet():
    """The profiler's C++ side prints a line to fd 2 when it starts and stops, with no setting to turn it off;
    those two lines would land in `peftkit plan`'s output."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class TensorPeak:
    """`with TensorPeak() as t: ...` then t.peak_bytes: the highest CPU tensor memory in use inside the block (on
    CUDA the allocator keeps this figure itself: torch.cuda.max_memory_allocated)."""

    def __enter__(self) -> TensorPeak:
        gc.collect()
        self.start_bytes, self.peak_bytes = live_tensor_bytes(), 0
        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        with _stderr_quiet():
            self._prof.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        with _stderr_quiet():
            self._prof.__exit__(*exc)
        moves = sorted((e.start_ns(), e.nbytes()) for e in self._prof.profiler.kineto_results.events()
                       if e.name() == "[memory]" and e.device_type() == torch.autograd.DeviceType.CPU)
        self._prof = None
        running = highest = 0
        for _, nbytes in moves:  # frees are negative
            running += nbytes
            highest = max(highest, running)
        self.peak_bytes = self.start_bytes + highest
