"""Multi-process (DDP) training of bts-density on the CPU: two gloo processes through the real trainer, datamanager
and model, against one process on the same (concatenated) batches.

What nerfstudio's launcher does per process (``_distributed_worker``; it asserts CUDA, so it is mirrored here with
gloo): init the process group, seed with ``machine.seed + rank``, ``config.setup(local_rank, world_size)``,
``trainer.setup()``, ``trainer.train()``.

Checks:
    * after each of two steps both ranks hold bit-identical weights (DDP averaged the gradients);
    * those weights equal a one-process run at twice the per-process batch (the union of the ranks' batches, which
      the datamanager draws by construction: ``ShardedOrder`` and per-step generators) within float tolerance.
      Batch norm uses its running statistics here, and the model's own per-process draws (stratified offsets along
      rays, the input flip) are off: with them, each rank draws its own, by design not the one-process draw
      (``docs/multi_gpu.md``);
    * only rank 0 wrote a checkpoint, without DDP's ``module.`` prefix;
    * resuming across GPU counts: a 2-process run resumed from the 1-process checkpoint and a 1-process run resumed
      from the 2-process checkpoint take the same third step;
    * the per-step ``StepAgreement`` is one all-reduce (means averaged, a flag of one rank raised on both), and
      ``wrap_ddp`` does not re-send buffers before every forward.
"""

import os
import sys
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.multiprocessing as mp

# The spawned processes unpickle the worker by module name: ddp_worker (next to this file) must be importable in
# them, and they inherit sys.path. The test modules themselves are imported by pytest's importlib mode only.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from ddp_worker import WORLD_SIZE, run, worker  # noqa: E402
from test_bts_end_to_end import synthetic_root, tiny_config  # noqa: E402, F401 - fixture used by name

PER_RANK_GROUPS = 1


def _config(data: Path, output_dir: Path, groups: int, steps: int, load_dir: Optional[Path] = None):
    config = tiny_config(data, output_dir)
    config.max_num_iterations = steps
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10_000
    config.steps_per_save = 10_000  # only the final checkpoint
    config.pipeline.datamanager.groups_per_batch = groups
    config.pipeline.datamanager.rays_per_group = 64
    config.pipeline.model.num_samples = 8
    config.load_dir = load_dir
    config.pipeline.model.flip_augmentation = False  # a per-process draw (see ddp_worker.run)
    return config


def _differences(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Absolute weight differences, all parameters flattened into one vector."""
    assert a.keys() == b.keys()
    return torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a if k != "group_ids" and a[k].numel()])


def _close(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> float:
    """Largest absolute weight difference."""
    return float(_differences(a, b).max())


def _assert_same_training(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor], what: str) -> None:
    """Weights of two processes against one process after the same steps: equal but for summation order.

    Adam moves every parameter by about lr (1e-4) per step whatever its gradient's size, so a parameter whose
    gradient is ~1e-8 moves differently under another summation order: on an AVX-512 CPU one of the 14.4M
    parameters differed by 4.2e-5 after step 0, and 17 by more than 1e-6. So no parameter may be a whole step apart,
    and all but a few in 100,000 must agree to 1e-6."""
    difference = _differences(a, b)
    assert difference.max() < 1e-4, f"{what}: 2 processes vs 1 differ by {difference.max()}"
    apart = int((difference > 1e-6).sum())
    assert apart <= 1e-5 * difference.numel(), f"{what}: {apart} parameters differ by more than 1e-6"


def _checkpoint(run_config) -> Path:
    found = sorted((run_config.get_base_dir() / "nerfstudio_models").glob("step-*.ckpt"))
    assert len(found) == 1, found
    return found[0]


def test_two_gloo_processes_match_one_process_on_the_union_batch(synthetic_root, tmp_path):  # noqa: F811
    torch.set_num_threads(1)
    # One process, 2 groups per step, two steps from scratch.
    single = _config(synthetic_root, tmp_path / "single", WORLD_SIZE * PER_RANK_GROUPS, steps=2)
    single.set_timestamp()
    run(single, 0, 1, tmp_path / "single.pt")
    single_checkpoint = _checkpoint(single)

    # Two processes, 1 group each: two steps from scratch, then one step resumed from the one-process checkpoint.
    ddp = _config(synthetic_root, tmp_path / "ddp", PER_RANK_GROUPS, steps=2)
    ddp.timestamp = "fresh"
    resumed = _config(synthetic_root, tmp_path / "ddp", PER_RANK_GROUPS, steps=1, load_dir=single_checkpoint.parent)
    resumed.timestamp = "resumed"
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(
        worker,
        args=(str(tmp_path / "init"), [(ddp, tmp_path / "ddp.pt"), (resumed, tmp_path / "resumed.pt")]),
        nprocs=WORLD_SIZE,
        join=True,
    )

    one = torch.load(tmp_path / "single.pt")
    ranks = [torch.load(tmp_path / f"ddp.pt.rank{r}") for r in range(WORLD_SIZE)]
    for step in (0, 1):
        # Rank r trains on rows r of the global batch; one process on all of them.
        assert torch.equal(torch.cat([ranks[r][step]["group_ids"] for r in range(WORLD_SIZE)]), one[step]["group_ids"])
        assert _close(ranks[0][step], ranks[1][step]) == 0.0, f"ranks differ after step {step}"
        _assert_same_training(ranks[0][step], one[step], f"step {step}")
    assert _close(ranks[0][1], ranks[0][0]) > 1e-6, "the second step changed nothing"

    # Rank 0 alone wrote the checkpoint, with one-process keys.
    state = torch.load(_checkpoint(ddp), map_location="cpu", weights_only=False)["pipeline"]
    assert not any(".module." in key for key in state), [k for k in state if ".module." in k][:3]
    assert not list(ddp.get_base_dir().parent.glob("*/.step-*.partial"))

    # Resume across GPU counts: 1 -> 2 processes (above) and 2 -> 1 process take the same step 2.
    back = _config(
        synthetic_root, tmp_path / "back", WORLD_SIZE * PER_RANK_GROUPS, steps=1, load_dir=_checkpoint(ddp).parent
    )
    back.set_timestamp()
    run(back, 0, 1, tmp_path / "back.pt")
    resumed_ranks = [torch.load(tmp_path / f"resumed.pt.rank{r}") for r in range(WORLD_SIZE)]
    back_one = torch.load(tmp_path / "back.pt")
    assert set(back_one) == {2} and set(resumed_ranks[0]) == {2}
    assert _close(resumed_ranks[0][2], resumed_ranks[1][2]) == 0.0
    _assert_same_training(resumed_ranks[0][2], back_one[2], "resumed step 2")


def test_srn_two_gloo_processes_shard_instances_and_stay_in_sync(tmp_path):
    """srn: the ranks train on disjoint instances (together the one-process draw) and hold identical weights."""
    from test_srn_training import SMALL_MODEL

    from bts_studio.data.shapenet.srn_dataparser import ShapeNetSRNDataParserConfig
    from bts_studio.data.synthetic.shapenet_cli import main as synth
    from bts_studio.methods.common.distributed import ShardedOrder
    from bts_studio.methods.srn.method_config import srn_trainer_config

    torch.set_num_threads(1)
    synth(
        [
            str(tmp_path / "data"),
            "--classes",
            "cars",
            "--instances",
            "4",
            "--val-instances",
            "1",
            "--test-instances",
            "1",
            "--format",
            "srn",
            "--resolution",
            "16",
            "--train-views",
            "4",
            "--test-views",
            "2",
        ]
    )
    config = srn_trainer_config()
    config.set_timestamp()
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.max_num_iterations = 2
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10_000
    config.output_dir = tmp_path / "runs"
    config.viewer.quit_on_train_completion = True
    config.pipeline.datamanager.data = tmp_path / "data" / "srn_cars"
    config.pipeline.datamanager.dataparser = ShapeNetSRNDataParserConfig(few_shot_views=(0,))
    config.pipeline.datamanager.instances_per_batch = 2
    config.pipeline.datamanager.rays_per_instance = 32
    config.pipeline.few_shot.input_views = (0, 1)
    for key, value in SMALL_MODEL.items():
        setattr(config.pipeline.model, key, value)
    mp.spawn(worker, args=(str(tmp_path / "init"), [(config, tmp_path / "srn.pt")]), nprocs=WORLD_SIZE, join=True)

    ranks = [torch.load(tmp_path / f"srn.pt.rank{r}") for r in range(WORLD_SIZE)]
    for step in (0, 1):
        assert _close(ranks[0][step], ranks[1][step]) == 0.0, f"srn ranks differ after step {step}"
        union = torch.cat([ranks[r][step]["group_ids"] for r in range(WORLD_SIZE)])
        assert len(set(union.tolist())) == 4  # disjoint: 2 ranks x 2 of the 4 instances
        assert torch.equal(union, ShardedOrder(4, 4, seed=config.machine.seed, per_step=True).batch(step))


def test_step_agreement_is_one_all_reduce_over_two_gloo_processes(tmp_path):
    """Means are averaged, a flag raised on one rank is raised on both, in one collective; no buffer broadcast."""
    from ddp_worker import agreement_worker

    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    mp.spawn(agreement_worker, args=(str(tmp_path / "init"), str(tmp_path / "agreed")), nprocs=WORLD_SIZE, join=True)
    results = [torch.load(f"{tmp_path / 'agreed'}.rank{rank}") for rank in range(WORLD_SIZE)]
    for result in results:
        assert result["means"] == {"a": 1.0, "b_loss": 0.5}
        assert result["flags"] == {"budget": True, "non_finite": False}
        assert result["same"] and result["collectives"] == 1
        assert result["written"] == [(5, {"a": 1.0, "b_loss": 0.5})]
        assert result["broadcast_buffers"] is False
