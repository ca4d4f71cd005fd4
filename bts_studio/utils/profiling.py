"""Counting what makes an inference launch-bound: aten ops (kernel launches on a GPU) and host-device syncs.

Shared by ``benchmarks/render_ops.py`` (issue 17's measurements, docs/benchmarks.md) and the test that keeps a
full-frame render free of syncs (tests/methods/test_bts_model.py), so both count the same thing.
"""

import warnings
from collections import Counter
from typing import Callable, Dict

import torch
from torch.overrides import TorchFunctionMode
from torch.profiler import ProfilerActivity, profile

__all__ = [
    "HOST_READ_CALLS",
    "LAUNCH_CALLS",
    "SYNC_CALLS",
    "SYNC_OPS",
    "count_host_reads",
    "count_ops",
    "cuda_sync_sites",
]

SYNC_OPS = (
    "aten::item",
    "aten::_local_scalar_dense",
    "aten::nonzero",
    "aten::is_nonzero",
    "aten::equal",
    "aten::lift_fresh",
)
"""aten ops that make the host wait for the device: ``.item()``, ``bool(t)``, ``nonzero`` (data-dependent shapes),
and ``lift_fresh`` (a tensor made from Python data, ``torch.tensor`` / ``as_tensor``: moved to a GPU it is a
blocking copy, ``cudaStreamSynchronize`` after a pageable ``cudaMemcpyAsync``). Not visible on the CPU:
``.tolist()`` / ``.cpu()`` of a GPU tensor (no aten op runs on a CPU tensor), which ``SYNC_CALLS`` catch on CUDA."""

HOST_READ_CALLS = ("tolist", "cpu", "numpy", "item", "__bool__", "__int__", "__float__", "__index__")
"""Tensor methods that copy a value to the host (a sync for a GPU tensor), seen at the Python level by
:func:`count_host_reads`; ``tolist``/``cpu``/``numpy`` run no aten op on a CPU tensor, so ``count_ops`` misses them."""

LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx")
SYNC_CALLS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaMemcpyAsync", "cudaMemcpy")


def count_ops(fn: Callable[[], object], cuda: bool = False) -> Dict[str, object]:
    """Number of aten op calls (all, and top-level: what Python dispatches) and of sync ops while ``fn()`` runs;
    with ``cuda`` also the CUDA runtime's kernel launches and synchronising calls (copies included)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        fn()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    ids = {e.id for e in events}
    top = [e for e in events if e.cpu_parent is None or e.cpu_parent.id not in ids]
    names = Counter(e.name for e in events)
    result: Dict[str, object] = {
        "aten_ops": len(events),
        "aten_ops_top_level": len(top),
        "sync_ops": sum(names[name] for name in SYNC_OPS),
        "sync_by_op": {name: names[name] for name in SYNC_OPS if names[name]},
    }
    if cuda:
        runtime = Counter(e.name for e in prof.events())
        result["cuda_kernel_launches"] = sum(runtime[name] for name in LAUNCH_CALLS)
        result["cuda_sync_calls"] = {name: runtime[name] for name in SYNC_CALLS if runtime[name]}
    return result


def cuda_sync_sites(fn: Callable[[], object]) -> Dict[str, int]:
    """Where ``fn()`` synchronises a CUDA device: ``torch.cuda.set_sync_debug_mode("warn")`` warns at every
    synchronising call (``.item()``, ``.tolist()``/``.cpu()`` of a GPU tensor, ``nonzero``, a blocking
    host-to-device copy); returns ``{"file:line": count}`` of the Python lines that made them. CUDA only."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    sites = Counter(f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message))
    return dict(sites.most_common())


class _HostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READ_CALLS:
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


def count_host_reads(fn: Callable[[], object]) -> Dict[str, int]:
    """``{method: calls}`` of the tensor-to-host reads (:data:`HOST_READ_CALLS`) that ``fn()`` makes from Python,
    on any device (a ``TorchFunctionMode``; reads inside C++ ops, e.g. boolean-mask indexing, are ``count_ops``'s)."""
    mode = _HostReads()
    with mode:
        fn()
    return dict(mode.calls)
