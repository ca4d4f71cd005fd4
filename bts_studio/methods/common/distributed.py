"""Multi-GPU training through nerfstudio's own launcher (``ns-train ... --machine.num-devices N``).

nerfstudio 1.1.5 spawns one process per GPU, seeds each with ``machine.seed + rank``, and its ``VanillaPipeline``
wraps the model in ``DistributedDataParallel`` (DDP). What our layer adds (see ``docs/multi_gpu.md``):

- :func:`wrap_ddp`: the DDP wrapping, done by our pipelines instead of nerfstudio's (which passes
  ``device_ids=[local_rank]`` and so fails for CPU/gloo processes, and always traverses the graph for unused
  parameters);
- :class:`ShardedOrder`: the ``DistributedSampler`` of frame groups / instances. Every rank computes the same
  *global* batch of ``world_size x per-rank`` items for a step and keeps its own slice, so the union of the ranks'
  batches is exactly the batch a one-process run with ``world_size x per-rank`` items draws for that step;
- :func:`step_generator`: the per-step random draws (patches, jitter, splits) likewise come from a generator seeded
  by ``(seed, step)``, drawn for the global batch and sliced per rank;
- :func:`shared_seed`: the seed all ranks agree on (rank 0's, i.e. ``--machine.seed``);
- :class:`StepAgreement`: what the ranks must agree on after a step (the logged loss means, the stop decisions of
  the time budget and the non-finite check), gathered during the step and all-reduced in ONE small collective, so
  that every rank stops at the same step (a rank that stops alone would leave the others waiting in DDP's
  all-reduce) without one collective and one host sync per decision;
- :func:`any_rank`: one all-reduced flag (for callers outside a training step).
"""

import inspect
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from jaxtyping import Int
from torch import Tensor, nn

__all__ = [
    "ShardedOrder",
    "StepAgreement",
    "any_rank",
    "rank_and_world_size",
    "shared_seed",
    "step_generator",
    "wrap_ddp",
]


def rank_and_world_size() -> Tuple[int, int]:
    """``(rank, world_size)`` of this process; ``(0, 1)`` without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _collective_device() -> torch.device:
    """Where a tensor for a collective must live: the current CUDA device for NCCL, else the CPU."""
    if dist.get_backend() == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shared_seed() -> int:
    """Rank 0's ``torch.initial_seed()`` on every rank (nerfstudio seeds rank r with ``machine.seed + r``)."""
    seed = int(torch.initial_seed()) % (2**62)
    if rank_and_world_size()[1] == 1:
        return seed
    value = torch.tensor([seed], dtype=torch.long, device=_collective_device())
    dist.broadcast(value, src=0)
    return int(value.item())


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on at least one (an all-reduce; no-op in one process)."""
    if rank_and_world_size()[1] == 1:
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32, device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class StepAgreement:
    """Per-step values every rank must agree on, all-reduced in one collective when the step is resolved.

    During step ``s`` callers add *means* (scalars averaged over the ranks: the training-curve CSV) and *flags*
    (stop decisions: True on every rank when True on one), either as values or as providers called at resolve
    time (the time budget reads its clock then). :meth:`resolve` sends them as one float64 vector (one
    ``all_reduce(SUM)``, one host sync; nothing at all in one process), calls the ``then`` functions of the means
    with the averages and caches the result, so later calls for the same step (the trainer's non-finite check,
    then the time-budget callback) cost nothing. Starting a new step resolves a forgotten previous one first.

    Every rank must add the same names at the same step (the names are sorted before the collective; a mismatch
    is a shape error in gloo and a hang in NCCL, as for any collective).
    """

    def __init__(self) -> None:
        self.flag_providers: Dict[str, Callable[[], bool]] = {}
        self._step: Optional[int] = None
        self._means: Dict[str, Tensor] = {}
        self._flags: Dict[str, bool] = {}
        self._then: List[Callable[[int, Dict[str, Tensor]], None]] = []
        self._result: Optional[Tuple[Dict[str, Tensor], Dict[str, bool]]] = None
        self.collectives = 0  # all-reduces made so far (tests and measurements read it)

    def _at(self, step: int) -> None:
        if step == self._step:
            return
        if self._step is not None and self._result is None and (self._means or self._flags or self._then):
            self.resolve(self._step)
        self._step, self._means, self._flags, self._then, self._result = step, {}, {}, [], None

    def add_means(
        self, step: int, values: Dict[str, Tensor], then: Optional[Callable[[int, Dict[str, Tensor]], None]] = None
    ) -> None:
        """Scalars of ``step`` to average over the ranks; ``then(step, means)`` runs once they are resolved."""
        self._at(step)
        if self._result is not None:
            raise RuntimeError(f"step {step} is already resolved; add its values before resolve()")
        self._means.update(values)
        if then is not None:
            self._then.append(then)

    def add_flag(self, step: int, name: str, value: bool) -> None:
        """A stop decision of ``step``: True on every rank after :meth:`resolve` if True on any."""
        self._at(step)
        if self._result is not None:
            raise RuntimeError(f"step {step} is already resolved; add its flags before resolve()")
        self._flags[name] = self._flags.get(name, False) or bool(value)

    def resolve(self, step: int) -> Tuple[Dict[str, Tensor], Dict[str, bool]]:
        """``(means, flags)`` of ``step``, agreed by all ranks (one all-reduce the first time, cached after)."""
        self._at(step)
        if self._result is not None:
            return self._result
        flags = dict(self._flags)
        for name, provider in self.flag_providers.items():
            flags[name] = flags.get(name, False) or bool(provider())
        mean_names, flag_names = sorted(self._means), sorted(flags)
        means = {name: self._means[name].detach().float().reshape(()) for name in mean_names}
        if rank_and_world_size()[1] > 1 and (mean_names or flag_names):
            # float64 holds the 0/1 flags exactly and the float32 losses without loss of precision.
            device = _collective_device()
            parts = [torch.tensor([float(flags[name]) for name in flag_names], dtype=torch.float64, device=device)]
            if mean_names:
                parts.insert(0, torch.stack([means[name] for name in mean_names]).to(device, torch.float64))
            vector = torch.cat(parts)
            dist.all_reduce(vector, op=dist.ReduceOp.SUM)
            self.collectives += 1
            summed = vector.cpu().tolist()  # the step's one host sync
            world_size = dist.get_world_size()
            means = {
                name: torch.tensor(summed[i] / world_size, dtype=torch.float32) for i, name in enumerate(mean_names)
            }
            flags = {name: summed[len(mean_names) + i] > 0 for i, name in enumerate(flag_names)}
        self._result = (means, flags)
        for then in self._then:
            then(step, means)
        return self._result


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """A CPU generator that depends only on ``(seed, step, stream)``: the same on every rank and every run."""
    # Distinct odd multipliers keep (seed, step, stream) triples apart; the mask keeps the seed a valid int64.
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + stream * 104_729) & ((1 << 63) - 1))


class ShardedOrder:
    """Epoch-wise shuffled order of ``num_items`` items, consumed ``world_size x batch_size`` items per step.

    Like ``torch.utils.data.DistributedSampler`` with ``set_epoch``: epoch ``e`` is a permutation seeded by
    ``(seed, e)``, the same on every rank; the ``world_size x batch_size`` items of a step are split into
    contiguous per-rank slices, so within an epoch no two ranks see the same item. Unlike it, the order is a pure
    function of the step (batches may straddle epochs, as one-process training here always did), so a resume
    from step ``s`` continues the same order, and a run on N GPUs with per-GPU batch ``b`` draws, at every step,
    the same items as one GPU with batch ``N x b``.

    Args:
        num_items: items to shuffle (frame groups, instances); must be >= 1.
        batch_size: items per rank per step.
        seed: shared seed (:func:`shared_seed`).
        rank, world_size: this process and the number of processes.
        per_step: shuffle anew every step (one permutation per step, items distinct within a step) instead of
            every epoch; needs ``world_size x batch_size <= num_items``.
    """

    def __init__(
        self, num_items: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, per_step: bool = False
    ) -> None:
        if num_items < 1 or batch_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"ShardedOrder: need items >= 1, batch >= 1, 0 <= rank < world_size; got "
                f"{num_items}, {batch_size}, {rank}, {world_size}"
            )
        if per_step and world_size * batch_size > num_items:
            raise ValueError(
                f"{world_size} processes x {batch_size} distinct items per step need at least "
                f"{world_size * batch_size} items; there are {num_items}"
            )
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size, self.per_step = rank, world_size, per_step
        self._epochs: dict = {}

    @property
    def global_batch_size(self) -> int:
        return self.world_size * self.batch_size

    def _permutation(self, epoch: int) -> List[int]:
        if epoch not in self._epochs:
            if len(self._epochs) > 4:  # only the current and next epochs are ever read again
                self._epochs.pop(min(self._epochs))
            self._epochs[epoch] = torch.randperm(self.num_items, generator=step_generator(self.seed, epoch, 1)).tolist()
        return self._epochs[epoch]

    def global_batch(self, step: int) -> Int[Tensor, " WB"]:
        """The items of ``step`` for all ranks, rank-major (rank r holds rows ``r*b .. (r+1)*b - 1``)."""
        size = self.global_batch_size
        if self.per_step:
            return torch.tensor(self._permutation(step)[:size], dtype=torch.long)
        start = step * size
        items: List[int] = []
        while len(items) < size:
            epoch, offset = divmod(start + len(items), self.num_items)
            permutation = self._permutation(epoch)
            items += permutation[offset : offset + size - len(items)]
        return torch.tensor(items, dtype=torch.long)

    def rank_slice(self) -> slice:
        """Rows of a global-batch tensor that belong to this rank."""
        return slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)

    def batch(self, step: int) -> Int[Tensor, " B"]:
        """This rank's items of ``step``."""
        return self.global_batch(step)[self.rank_slice()]


def wrap_ddp(model: nn.Module, device: torch.device | str, find_unused_parameters: bool) -> nn.Module:
    """``DistributedDataParallel(model)``, with ``device_ids`` only for a CUDA model (gloo/CPU takes none).

    ``find_unused_parameters=True`` (nerfstudio's choice) lets a step leave some trainable parameters without a
    gradient; False skips the per-step graph traversal but then every trainable parameter must get a gradient
    every step, or DDP raises at the next step (it never hangs silently). Frozen parameters
    (``requires_grad=False``) are ignored by DDP either way.
    """
    from torch.nn.parallel import DistributedDataParallel

    device = torch.device(device)
    indicator = getattr(model, "device_indicator_param", None)
    if isinstance(indicator, nn.Parameter):
        # nerfstudio's empty "which device am I on" parameter never gets a gradient; left trainable, it would make
        # find_unused_parameters=False fail at the second step.
        indicator.requires_grad_(False)
    device_ids = None
    if device.type == "cuda":
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    # gradient_as_bucket_view: gradients live in DDP's all-reduce buckets (no copy in and out each step).
    # broadcast_buffers=False: DDP's default re-sends rank 0's buffers before every forward (a flatten, a
    # broadcast and a copy back per buffer: ~160 batch-norm tensors for a ResNet-50). Our models' only changing
    # buffers are batch-norm running statistics, which training-mode batch norm does not read (it normalises with
    # the batch's statistics); they matter only for evaluation and checkpoints, both of which are rank 0's, and
    # rank 0's own running statistics are the same with or without the broadcast. The other buffers are constants.
    # Newer torch names the switch forward_sync_buffers (which still syncs the buffers once, at construction).
    parameters = inspect.signature(DistributedDataParallel.__init__).parameters
    no_buffer_sync = {"forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers": False}
    return DistributedDataParallel(
        model,
        device_ids=device_ids,
        find_unused_parameters=find_unused_parameters,
        gradient_as_bucket_view=True,
        **no_buffer_sync,
    )
