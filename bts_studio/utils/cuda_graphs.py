"""Replay an inference function as a CUDA graph (issue 17: bts-density's encoder and render passes), and a training
step's forward and backward as two (:class:`GraphedTraining`: bts-density's bf16 training encoder).

At batch 1, a ResNet-50 + decoder forward at 192x640 and a render pass of the Triton density path are launch-bound:
hundreds of kernels that the GPU finishes faster than Python issues them. Measured on an H200
(``benchmarks/speed_probe.py``, docs/benchmarks.md): the encoder 8.5 ms eager, 1.9 ms as a replayed graph, with the
same kernels and arithmetic. The eager function is the twin: :class:`GraphedInference` calls it off CUDA, with
gradients enabled, while the module trains, and for good after a capture fails.
"""

import inspect
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules import module as torch_module

_MODULE_TREE_VERSION = [0]
"""Bumped whenever any module in the process gains a submodule (torch's global registration hook), so that a
wrapper's cached list of submodules is rebuilt only then."""


def _module_added(module: nn.Module, name: str, submodule: Optional[nn.Module]) -> None:
    _MODULE_TREE_VERSION[0] += 1


torch_module.register_module_module_registration_hook(_module_added)


class _ModuleTensors:
    """A module's parameters and buffers, read from each submodule's own dicts on every call (a tensor replaced by
    ``module.to`` or assignment is seen); only the list of submodules is cached, rebuilt when any module gains a
    submodule, because walking ``module.parameters()`` took 0.58 ms per call on the H200's host, a third of a render
    pass's GPU time (issue 17, ``speed_probe.py --parts image_timeline``)."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._submodules: list = []
        self._tree_version = -1

    def _walk(self, kind: str) -> list:
        if self._tree_version != _MODULE_TREE_VERSION[0]:
            self._submodules = list(self.module.modules())
            self._tree_version = _MODULE_TREE_VERSION[0]
        return [t for m in self._submodules for t in getattr(m, kind).values() if t is not None]

    def parameters(self) -> list:
        return self._walk("_parameters")

    def buffers(self) -> list:
        return self._walk("_buffers")


@dataclass
class _Captured:
    graph: "torch.cuda.CUDAGraph"
    static_inputs: Sequence[Tensor]
    static_output: Any


def _clone(output: Any) -> Any:
    if isinstance(output, Tensor):
        return output.clone()
    return {name: value.clone() for name, value in output.items()}


class GraphedInference:
    """``fn(*tensors)`` for inference, replayed from a CUDA graph captured once per input signature.

    ``fn`` returns a tensor or a dict of tensors. The graph reads ``module``'s parameters and buffers by address,
    so in-place updates (optimiser steps, ``load_state_dict``) are seen; a parameter that moves
    (``module.to(...)``) makes a new capture. Inputs are copied into the graph's own buffers before each replay.
    Each capture keeps its intermediates in a private memory pool, so at most ``max_graphs`` signatures are kept
    (least recently used first out). Outputs are copies: the graph's buffers are overwritten by the next replay.

    Args:
        fn: makes no host syncs and has no data-dependent control flow or shapes.
        module: whose parameters ``fn`` reads, and whose ``training`` flag turns graphs off.
        max_graphs: number of input signatures kept.
    """

    def __init__(self, fn: Callable[..., Any], module: nn.Module, max_graphs: int = 2) -> None:
        self.fn = fn
        self.module = module
        self.max_graphs = max_graphs
        self.error: Optional[Exception] = None
        """The capture error that turned graphs off for this wrapper (eager from then on)."""
        self._graphs: "OrderedDict[tuple, _Captured]" = OrderedDict()
        self._tensors = _ModuleTensors(module)

    def applies(self, *tensors: Tensor) -> bool:
        """Whether a call with ``tensors`` replays a graph (else it calls ``fn`` itself)."""
        return (
            self.error is None
            and not torch.is_grad_enabled()
            and not self.module.training
            and all(t.is_cuda for t in tensors)
        )

    def __call__(self, *tensors: Tensor) -> Any:
        if not self.applies(*tensors):
            return self.fn(*tensors)
        # Not the strides: inputs are copied into the graph's own buffers, so a slice and a padded copy of the same
        # shape share one graph.
        key = (tuple((t.shape, t.dtype, t.device) for t in tensors), self._addresses())
        captured = self._graphs.get(key)
        if captured is None:
            try:
                captured = self._capture(tensors)
            except Exception as error:  # a capture that fails (driver, an op that syncs) must not end a render
                self.error = error
                self._graphs.clear()
                warnings.warn(f"CUDA graph capture failed ({error!r}); running eagerly from now on", stacklevel=2)
                return self.fn(*tensors)
            self._graphs[key] = captured
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        for static, tensor in zip(captured.static_inputs, tensors, strict=True):
            static.copy_(tensor)
        captured.graph.replay()
        return _clone(captured.static_output)

    def clear(self) -> None:
        """Drop every captured graph (and its memory pool)."""
        self._graphs.clear()

    def _addresses(self) -> tuple:
        """Where every parameter and buffer lives now (:class:`_ModuleTensors`: cheap on the host)."""
        return tuple(t.data_ptr() for t in self._tensors.parameters() + self._tensors.buffers())

    def _capture(self, tensors: Sequence[Tensor]) -> _Captured:
        device = tensors[0].device
        static_inputs = [t.contiguous().clone() for t in tensors]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the graph: kernel compilation, cuDNN's choice, the allocator
                self.fn(*static_inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the viewer renders from its own thread while the trainer's thread keeps launching work.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_output = self.fn(*static_inputs)
        return _Captured(graph, static_inputs, static_output)


class _Forward(nn.Module):
    """A throwaway module whose forward is ``fn`` and whose parameters are ``module``'s, for
    ``torch.cuda.make_graphed_callables`` (which replaces the forward of the module it is given)."""

    def __init__(self, fn: Callable[..., Tensor], module: nn.Module) -> None:
        super().__init__()
        self.inner = module
        self.fn = fn

    def forward(self, *tensors: Tensor) -> Tensor:
        return self.fn(*tensors)


class GraphedTraining:
    """``fn(*tensors)`` for training steps, its forward and backward replayed from CUDA graphs
    (``torch.cuda.make_graphed_callables``), captured again when an input signature or a parameter's address changes.

    For a training step whose host cannot issue its kernels as fast as the GPU runs them (issue 17: the bf16
    encoder's step took 61.5 ms to issue against 39.2 ms of GPU work on an H200). The capture's warm-up runs the
    forward and backward three times; BatchNorm's running statistics are restored afterwards, so every real step
    updates them once, as the eager call does. Off CUDA, without gradients, while ``module`` evaluates, under
    several processes (DistributedDataParallel hooks the gradients) and for good after a failed capture, ``fn`` runs
    eagerly: it is the twin. It also runs eagerly while any parameter holds a gradient (``zero_grad`` without
    ``set_to_none``, gradient accumulation): the replayed backward hands autograd its own buffers, which become the
    parameters' ``.grad``, so accumulating into them would double the gradient. One input signature is kept (a
    training step's shapes do not change). Outputs are the graph's buffers, overwritten by the next call: use them
    within the step.

    Args:
        fn: a tensor in, a tensor out; no host syncs, no data-dependent shapes, no randomness.
        module: whose parameters ``fn`` trains and whose ``training`` flag turns graphs on.
    """

    def __init__(self, fn: Callable[..., Tensor], module: nn.Module) -> None:
        self.fn = fn
        self.module = module
        self.error: Optional[Exception] = None
        """The capture error that turned graphs off for this wrapper (eager from then on)."""
        self._graphed: Optional[Callable[..., Tensor]] = None
        self._key: Optional[tuple] = None
        self._tensors = _ModuleTensors(module)

    def applies(self, *tensors: Tensor, parameters: Optional[list] = None) -> bool:
        """Whether a call with ``tensors`` replays the graphs (else it calls ``fn`` itself); ``parameters``: the
        module's, when the caller has them already."""
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        return (
            self.error is None
            and torch.is_grad_enabled()
            and self.module.training
            and not (distributed and torch.distributed.get_world_size() > 1)
            and all(t.is_cuda for t in tensors)
            and all(p.grad is None for p in (self._tensors.parameters() if parameters is None else parameters))
        )

    def __call__(self, *tensors: Tensor) -> Tensor:
        parameters = self._tensors.parameters()  # walked once per step, for the check and the key
        if not self.applies(*tensors, parameters=parameters):
            return self.fn(*tensors)
        key = (
            tuple((t.shape, t.dtype, t.device, t.requires_grad) for t in tensors),
            tuple((p.data_ptr(), p.requires_grad) for p in parameters),
            tuple(b.data_ptr() for b in self._tensors.buffers()),
        )
        if key != self._key:
            try:
                self._graphed = self._capture(tensors)
            except Exception as error:  # a capture that fails must not end a training run
                self.error = error
                self._graphed = None
                warnings.warn(
                    f"CUDA graph capture of the training step failed ({error!r}); running eagerly", stacklevel=2
                )
                return self.fn(*tensors)
            self._key = key
        assert self._graphed is not None
        return self._graphed(*tensors)

    def clear(self) -> None:
        """Drop the captured graphs (and their memory pool)."""
        self._graphed = None
        self._key = None

    def _capture(self, tensors: Sequence[Tensor]) -> Callable[..., Tensor]:
        buffers = self._tensors.buffers()
        saved = [b.clone() for b in buffers]
        samples = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in tensors)
        # thread_local, as for inference: the viewer's thread may run CUDA work while the trainer's thread captures.
        options = {}
        if "capture_error_mode" in inspect.signature(torch.cuda.make_graphed_callables).parameters:
            options["capture_error_mode"] = "thread_local"
        try:
            graphed = torch.cuda.make_graphed_callables(_Forward(self.fn, self.module), samples, **options)
            # The capture's warm-up runs on a side stream, so the parameters' gradient accumulators carry that stream,
            # and the replayed backward warned (once per process) that this "may incur unnecessary synchronization".
            # The gradients are right (bit-identical to the eager step on an H200, twelfth session); the event wait
            # per parameter stays, only the warning goes. The switch is process-wide and stays off: a training
            # process that captured this graph would warn for the same reason on every other capture too.
            quiet = getattr(torch.autograd.graph, "set_warn_on_accumulate_grad_stream_mismatch", None)
            if quiet is not None:
                quiet(False)
        finally:
            with torch.no_grad():
                for buffer, value in zip(buffers, saved, strict=True):
                    buffer.copy_(value)
        return graphed
