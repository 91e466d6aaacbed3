"""Count what a piece of code asks of the device: operators dispatched and host reads.

On a GPU a small-image training step is bound by the host, not by the GPU (README,
*Benchmarks*): every operator costs a kernel launch, and every *host read* (``.item()``,
``float(t)``, ``bool(t)``, ``.tolist()``, a boolean-mask index, ``nonzero``) makes the host wait
until the GPU has finished all queued work, so it cannot queue the next operators meanwhile.
Both are properties of the code, not of the device, so they can be counted on the CPU:

    with DeviceTraffic() as traffic:
        step()
    traffic.ops, traffic.host_reads, traffic.reads  # the last: which operators read, how often

Copies between the CPU and the GPU are not seen on a CPU-only machine; on CUDA,
``torch.cuda.set_sync_debug_mode("error")`` catches those too (``tests/test_train_encoder.py``).
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# operators whose result size or value the host must read back from the device
_READ_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select",
             "aten::nonzero_static", "aten::unique", "aten::_unique2"}
_INDEX_OPS = {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"}


def host_reads_are_free(device: torch.device | str) -> bool:
    """Whether reading a tensor's value back costs nothing (CPU) or stalls the device (GPU).

    Code that must choose a branch by a tensor's value asks this first; tests patch it to take
    the GPU's branch on a CPU.
    """
    return torch.device(device).type == "cpu"


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())


class DeviceTraffic(TorchDispatchMode):
    """A dispatch mode that counts operators and host reads (see the module docstring).

    ``Tensor.tolist()`` does not dispatch an operator on the CPU, so it is counted by wrapping it
    while the mode is active.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.reads: Counter[str] = Counter()
        self._tolist = None

    @property
    def host_reads(self) -> int:
        return sum(self.reads.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        self.ops += 1
        if name in _READ_OPS or (name in _INDEX_OPS and _has_bool_index(args)):
            self.reads[name] += 1
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        tolist = self._tolist = torch.Tensor.tolist
        reads = self.reads

        def counted_tolist(tensor, *args, **kwargs):
            reads["Tensor.tolist"] += 1
            return tolist(tensor, *args, **kwargs)

        torch.Tensor.tolist = counted_tolist
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)
