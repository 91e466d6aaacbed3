"""dia.hostsync: what counts as a host read, and the patched `Tensor.tolist` is put back."""

from __future__ import annotations

import pytest
import torch

from dia.hostsync import DeviceTraffic


def test_reads_are_counted_and_arithmetic_is_not():
    x = torch.arange(6.0)
    with DeviceTraffic() as traffic:
        y = (x * 2 + 1).exp().sum()
    assert traffic.host_reads == 0 and traffic.ops >= 4
    reads = [
        lambda: float(y), lambda: bool(x[0] > 1), lambda: x.tolist(), lambda: x[x > 2],
        lambda: x.nonzero(), lambda: torch.equal(x, x),
        lambda: x.repeat_interleave(torch.tensor([1, 2, 1, 1, 1, 1])),
    ]
    for read in reads:
        with DeviceTraffic() as traffic:
            read()
        assert traffic.host_reads == 1, traffic.reads
    with DeviceTraffic() as traffic:
        x.repeat_interleave(2)  # an int: the size is known on the host
    assert traffic.host_reads == 0


def test_tolist_is_restored_even_when_the_block_raises():
    with pytest.raises(RuntimeError), DeviceTraffic():
        raise RuntimeError("inside")
    assert "tolist" not in torch.Tensor.__dict__  # inherited again, as before
    assert torch.tensor([1, 2]).tolist() == [1, 2]
