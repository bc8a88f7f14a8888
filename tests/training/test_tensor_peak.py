"""peftkit.training.tensor_peak: the live tensors' peak on CPU, from what is alive at the start and the profiler's
allocation events after it."""

import torch

from peftkit.training.tensor_peak import TensorPeak, live_tensor_bytes


def test_live_tensor_bytes_counts_each_storage_once():
    before = live_tensor_bytes()
    x = torch.zeros(1000, 1000)  # 4,000,000 bytes
    view = x[:10]  # shares x's storage
    assert live_tensor_bytes() - before == 4_000_000
    del x, view


def test_peak_is_the_start_plus_the_highest_point_of_the_allocations_inside():
    weight = torch.ones(500, 500)  # alive before: 1,000,000 bytes
    with TensorPeak() as peak:
        a = torch.ones(1000, 1000)  # +4 MB
        b = a * 2  # +4 MB: 8 MB above the start at the highest point
        del a, b
        c = torch.ones(250, 1000)  # +1 MB after both were freed
    assert abs(peak.peak_bytes - peak.start_bytes - 8_000_000) < 1024  # (and a wrapped scalar or two)
    assert peak.start_bytes >= weight.nbytes
    del c


def test_the_profiler_leaves_stderr_alone(capfd):
    """PyTorch's profiler writes a line to fd 2 when it starts and stops; `peftkit plan --measure` shows neither."""
    with TensorPeak():
        torch.ones(10)
    assert capfd.readouterr().err == ""
