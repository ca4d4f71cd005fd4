"""Replay a module's inference forward as a CUDA graph (issue 17: bts-density's encoder at batch 1).

At batch 1 a ResNet-50 + decoder forward at 192x640 is launch-bound: ~300 kernels that the GPU finishes faster than
Python issues them. Measured on an H200 (``benchmarks/speed_probe.py``, docs/benchmarks.md): 8.5 ms eager, 1.9 ms as
a replayed CUDA graph, same fp32 arithmetic. The eager module is the twin: :class:`GraphedInference` falls back to
it off CUDA, with gradients enabled, in training mode, and for good after a capture fails.
"""

import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn


@dataclass
class _Captured:
    graph: "torch.cuda.CUDAGraph"
    static_input: Tensor
    static_output: Tensor


class GraphedInference:
    """``module(x)`` for inference, replayed from a CUDA graph captured once per input shape.

    The graph reads the module's parameters and buffers by address, so in-place updates (optimiser steps,
    ``load_state_dict``) are seen; a parameter that moves (``module.to(...)``) makes a new capture. Each capture keeps
    its activations in a private memory pool, so at most ``max_graphs`` shapes are kept (least recently used first
    out). The returned tensor is a copy: the graph's output buffer is overwritten by the next replay.

    Args:
        module: a module whose forward makes no host syncs and has no data-dependent control flow.
        max_graphs: number of input shapes kept.
    """

    def __init__(self, module: nn.Module, max_graphs: int = 2) -> None:
        self.module = module
        self.max_graphs = max_graphs
        self.error: Optional[Exception] = None
        """The capture error that turned graphs off for this wrapper (eager from then on)."""
        self._graphs: "OrderedDict[tuple, _Captured]" = OrderedDict()

    def applies(self, x: Tensor) -> bool:
        """Whether a call with ``x`` replays a graph (else it runs the eager module)."""
        return x.is_cuda and not torch.is_grad_enabled() and not self.module.training and self.error is None

    def __call__(self, x: Tensor) -> Tensor:
        if not self.applies(x):
            return self.module(x)
        key = (tuple(x.shape), x.dtype, x.device, x.stride(), self._addresses())
        captured = self._graphs.get(key)
        if captured is None:
            try:
                captured = self._capture(x)
            except Exception as error:  # a capture that fails (driver, an op that syncs) must not end a render
                self.error = error
                self._graphs.clear()
                warnings.warn(f"CUDA graph capture failed ({error!r}); running eagerly from now on", stacklevel=2)
                return self.module(x)
            self._graphs[key] = captured
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        captured.static_input.copy_(x)
        captured.graph.replay()
        return captured.static_output.clone()

    def clear(self) -> None:
        """Drop every captured graph (and its memory pool)."""
        self._graphs.clear()

    def _addresses(self) -> tuple:
        return tuple(t.data_ptr() for t in (*self.module.parameters(), *self.module.buffers()))

    def _capture(self, x: Tensor) -> _Captured:
        static_input = x.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the graph: cuDNN's algorithm choice and the allocator settle
                self.module(static_input)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the viewer renders from its own thread while the trainer's thread keeps launching work.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_output = self.module(static_input)
        return _Captured(graph, static_input, static_output)
