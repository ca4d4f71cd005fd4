"""Units of the multi-GPU layer that need no second process: the sharded order and deepvoxels' refusal."""

import pytest
import torch

from bts_studio.methods.common.distributed import ShardedOrder, any_rank, rank_and_world_size, shared_seed


@pytest.mark.parametrize("per_step", [False, True])
def test_ranks_together_draw_the_one_process_batch(per_step):
    """N ranks at batch b draw, step by step, the items one process at N x b draws (same seed)."""
    one = ShardedOrder(10, 4, seed=7, per_step=per_step)
    ranks = [ShardedOrder(10, 2, seed=7, rank=r, world_size=2, per_step=per_step) for r in range(2)]
    for step in range(12):
        assert torch.equal(torch.cat([order.batch(step) for order in ranks]), one.batch(step))
        assert len(set(one.batch(step).tolist())) == 4 or not per_step  # per step: distinct within the step


def test_epoch_order_visits_every_item_once_per_epoch_and_depends_on_seed():
    order = ShardedOrder(6, 3, seed=1)
    first_epoch = torch.cat([order.batch(0), order.batch(1)]).tolist()
    assert sorted(first_epoch) == list(range(6))
    assert first_epoch != torch.cat([ShardedOrder(6, 3, seed=2).batch(s) for s in (0, 1)]).tolist()
    straddling = ShardedOrder(5, 2, seed=1)  # batches straddle epochs: 10 draws = two full epochs
    draws = torch.cat([straddling.batch(s) for s in range(5)]).tolist()
    assert sorted(draws[:5]) == sorted(draws[5:]) == list(range(5))


def test_per_step_order_refuses_too_few_items_and_one_process_helpers_are_identity():
    with pytest.raises(ValueError, match="need at least 8 items"):
        ShardedOrder(5, 4, seed=0, rank=0, world_size=2, per_step=True)
    assert rank_and_world_size() == (0, 1)
    assert any_rank(True) and not any_rank(False)
    torch.manual_seed(3)
    assert shared_seed() == 3


def test_deepvoxels_refuses_several_gpus_before_loading_data():
    from bts_studio.methods.deepvoxels.method_config import deepvoxels_trainer_config
    from bts_studio.methods.deepvoxels.pipeline import DeepVoxelsPipeline

    config = deepvoxels_trainer_config().pipeline
    with pytest.raises(ValueError, match="does not train on several GPUs"):
        DeepVoxelsPipeline(config, "cpu", world_size=2)


def test_step_agreement_in_one_process_is_local_and_resolves_once():
    from bts_studio.methods.common.distributed import StepAgreement

    agreement = StepAgreement()
    readings = []
    agreement.flag_providers["budget"] = lambda: readings.append(1) or len(readings) > 1
    rows = []
    agreement.add_means(0, {"loss": torch.tensor(0.5)}, then=lambda step, means: rows.append((step, means)))
    agreement.add_flag(0, "non_finite", False)
    means, flags = agreement.resolve(0)
    assert agreement.resolve(0) == (means, flags) and len(readings) == 1  # cached: provider read once
    assert float(means["loss"]) == 0.5 and flags == {"budget": False, "non_finite": False}
    assert rows == [(0, means)] and agreement.collectives == 0
    with pytest.raises(RuntimeError, match="already resolved"):
        agreement.add_flag(0, "late", True)
    agreement.add_means(1, {"loss": torch.tensor(1.0)}, then=lambda step, means: rows.append((step, means)))
    agreement.add_flag(2, "non_finite", True)  # step 1 was never resolved: it is, before step 2 starts
    assert [step for step, _ in rows] == [0, 1] and len(readings) == 2
    assert agreement.resolve(2)[1] == {"budget": True, "non_finite": True}
