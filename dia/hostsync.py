"""Count what a piece of code asks of the device: operators dispatched and host reads.

On a GPU a small-image training step is bound by the host, not by the GPU (docs/MEASUREMENTS.md,
*Benchmarks*): every operator costs a kernel launch, and every *host read* (``.item()``,
``float(t)``, ``bool(t)``, ``.tolist()``, a boolean-mask index, ``nonzero``) makes the host wait
until the GPU has finished all queued work, so it cannot queue the next operators meanwhile.
Both are properties of the code, not of the device, so they can be counted on the CPU:

    with DeviceTraffic() as traffic:
        step()
    traffic.ops, traffic.host_reads, traffic.reads  # the last: which operators read, how often

Copies between the host and a GPU are counted where they happen (on CUDA), so a CPU-only
machine does not see them; nor does it see a copy from pageable host memory that a GPU has to
wait for. On CUDA, ``torch.cuda.set_sync_debug_mode("warn")`` reports every synchronising call
(``tests/test_train_encoder.py``). The list of reading operators below is what this code base
uses and its neighbours, not every operator torch has.
"""

from __future__ import annotations

from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# operators whose result size or value the host must read back from the device
_READ_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::nonzero_static",
             "aten::masked_select", "aten::unique", "aten::_unique", "aten::_unique2",
             "aten::unique_consecutive", "aten::unique_dim", "aten::equal", "aten::allclose",
             "aten::bincount", "aten::histc"}
_INDEX_OPS = {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_"}


def _has_bool_index(args) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())


def _is_read(func, args, kwargs) -> bool:
    name = func._schema.name
    if name in _READ_OPS or (name in _INDEX_OPS and _has_bool_index(args)):
        return True
    if name == "aten::repeat_interleave":  # a tensor of repeats: the output size is read
        return func._schema.overload_name != "self_int" and kwargs.get("output_size") is None
    if name == "aten::_to_copy":  # .cpu(), .to(device) across devices, unless it need not wait
        target, source = kwargs.get("device"), args[0]
        if target is None or torch.device(target).type == source.device.type:
            return False
        return not (kwargs.get("non_blocking") and source.is_pinned())
    if name == "aten::copy_":
        return args[0].device.type != args[1].device.type
    return False


class DeviceTraffic(TorchDispatchMode):
    """A dispatch mode that counts operators and host reads (see the module docstring).

    ``Tensor.tolist()`` does not dispatch an operator on the CPU, so it is counted by wrapping it
    while the mode is active (in every thread: the mode itself sees only the current one).
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
        kwargs = kwargs or {}
        self.ops += 1
        if _is_read(func, args, kwargs):
            self.reads[func._schema.name] += 1
        return func(*args, **kwargs)

    def __enter__(self):
        mode = super().__enter__()
        tolist, reads = torch.Tensor.tolist, self.reads
        self._tolist = torch.Tensor.__dict__.get("tolist")  # None: inherited from TensorBase

        def counted_tolist(tensor, *args, **kwargs):
            reads["Tensor.tolist"] += 1
            return tolist(tensor, *args, **kwargs)

        torch.Tensor.tolist = counted_tolist
        return mode

    def __exit__(self, *exc):
        try:
            if self._tolist is None:
                del torch.Tensor.tolist
            else:
                torch.Tensor.tolist = self._tolist
        finally:
            return super().__exit__(*exc)
