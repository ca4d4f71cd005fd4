"""Worker of ``test_ddp.py`` (a plain module so that spawned processes can import it by name)."""

from pathlib import Path
from typing import Dict, List

import torch

WORLD_SIZE = 2


def run(config, rank: int, world_size: int, record: Path) -> None:
    """One process of a run: nerfstudio's ``train_loop`` plus a callback recording the weights after each step."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    torch.manual_seed(config.machine.seed + rank)  # what nerfstudio's train_loop does
    trainer = config.setup(local_rank=rank, world_size=world_size)
    trainer.setup()
    model = trainer.pipeline.model
    # The model's own draws (stratified sample offsets along rays, the input flip) come from each process's global
    # generator (seeded machine.seed + rank, as nerfstudio does): off here, so that the union comparison is exact.
    if hasattr(model, "sampler"):
        model.sampler.train_stratified = False
    for module in model.modules():  # batch norm on running statistics (see the module docstring)
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(lambda m, _: None if m.train(False) else None)
    snapshots: Dict[int, Dict[str, torch.Tensor]] = {}

    def snapshot(step: int) -> None:
        weights = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        batch = trainer._last_train_batch[1]
        weights["group_ids"] = (batch.group_ids if hasattr(batch, "group_ids") else batch.instances).clone()
        snapshots[step] = weights

    trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], snapshot))
    trainer.train()
    torch.save(snapshots, record)


def worker(rank: int, init_file: str, jobs: List[tuple]) -> None:
    import torch.distributed as dist
    from nerfstudio.utils import comms

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    comms.LOCAL_PROCESS_GROUP = dist.new_group(list(range(WORLD_SIZE)))
    try:
        for config, record in jobs:
            run(config, rank, WORLD_SIZE, Path(f"{record}.rank{rank}"))
        dist.barrier()  # both ranks done before either tears gloo down (a rank leaving early aborted its peer)
    finally:
        dist.destroy_process_group()


def agreement_worker(rank: int, init_file: str, out: str) -> None:
    """Resolve a StepAgreement on two gloo ranks with different values; record what each rank got."""
    import torch.distributed as dist

    from bts_studio.methods.common.distributed import StepAgreement, wrap_ddp

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        agreement = StepAgreement()
        agreement.flag_providers["budget"] = lambda: rank == 1  # only rank 1 is over budget
        written: List[tuple] = []
        agreement.add_means(5, {"b_loss": torch.tensor(float(rank)), "a": torch.tensor(2.0 * rank)})
        agreement.add_means(5, {}, then=lambda step, means: written.append((step, means)))
        agreement.add_flag(5, "non_finite", False)
        first = agreement.resolve(5)
        again = agreement.resolve(5)  # cached: no second collective
        model = wrap_ddp(torch.nn.BatchNorm1d(2), "cpu", find_unused_parameters=False)
        torch.save(
            {
                "means": {k: float(v) for k, v in first[0].items()},
                "flags": first[1],
                "same": again is first,
                "collectives": agreement.collectives,
                "written": [(s, {k: float(v) for k, v in m.items()}) for s, m in written],
                "broadcast_buffers": getattr(model, "forward_sync_buffers", getattr(model, "broadcast_buffers", None)),
            },
            f"{out}.rank{rank}",
        )
        dist.barrier()  # both ranks done before either tears gloo down (a rank leaving early aborted its peer)
    finally:
        dist.destroy_process_group()
