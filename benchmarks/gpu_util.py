"""How busy the GPU was while a block ran, as nvidia-smi's "GPU-Util" would say.

    with GpuUtilisation(device) as util:
        ...timed work...
    util.mean  # percent of time a kernel was running, averaged over the samples; None on CPU

NVML (through `torch.cuda.utilization`, which needs nvidia-ml-py) is read every `interval`
seconds on a background thread. Each reading covers NVML's own sample period (1/6 s to 1 s), so
blocks shorter than a second give few samples: time enough iterations. Where NVML cannot be
read, `mean` is None and `error` says why; the timed work is unaffected.
"""

from __future__ import annotations

import threading

import torch


class GpuUtilisation:
    def __init__(self, device: torch.device | str, interval: float = 0.05) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.samples: list[int] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "GpuUtilisation":
        self.samples = []
        if self.device.type != "cuda":
            return self
        try:
            torch.cuda.utilization(self.device)
        except Exception as exc:  # no NVML binding, no permission, ...
            self.error = f"{type(exc).__name__}: {exc}"
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.samples.append(int(torch.cuda.utilization(self.device)))

    def __exit__(self, *exc_info) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    @property
    def mean(self) -> float | None:
        return round(sum(self.samples) / len(self.samples), 1) if self.samples else None

    def summary(self) -> dict:
        """{"gpu_util_pct": mean, "gpu_util_samples": n} (+ "gpu_util_error" when unreadable)."""
        out = {"gpu_util_pct": self.mean, "gpu_util_samples": len(self.samples)}
        if self.error:
            out["gpu_util_error"] = self.error
        return out
