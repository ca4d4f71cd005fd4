"""The trainer's draw-ahead (``--pipeline.draw-ahead``, ``bts_studio/utils/trainer.py``): step N+1's batch is drawn
while step N runs, before step N's non-finite check is read.

Rules checked: the batches and losses are identical with and without it; a non-finite step N still stops the run
naming step N and ITS batch (not the one drawn ahead), and nothing is saved at or after step N.
"""

import sys
from pathlib import Path

import pytest
import torch

# The tiny bts-density data and config of the end-to-end test (as test_ddp.py uses them).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bts_end_to_end import synthetic_root, tiny_config  # noqa: E402, F401 - fixture used by name


def tiny_trainer(data: Path, output_dir: Path, steps: int, draw_ahead: bool):
    from nerfstudio.scripts.train import _set_random_seed

    config = tiny_config(data, output_dir)
    config.max_num_iterations, config.steps_per_save = steps, 1
    config.steps_per_eval_batch = config.steps_per_eval_image = 0
    config.pipeline.draw_ahead = draw_ahead
    config.pipeline.datamanager.groups_per_batch, config.pipeline.datamanager.rays_per_group = 1, 64
    config.pipeline.datamanager.num_workers = 0
    config.pipeline.model.num_samples = 8
    _set_random_seed(config.machine.seed)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return config, trainer


def test_draw_ahead_draws_the_same_batches_and_gives_the_same_losses(synthetic_root, tmp_path):  # noqa: F811
    runs = {}
    for draw_ahead in (False, True):
        _, trainer = tiny_trainer(synthetic_root, tmp_path / str(draw_ahead), 3, draw_ahead)
        rows = []
        for step in range(3):
            loss, _, _ = trainer.train_iteration(step)
            batch = trainer._last_train_batch[1]
            rows.append(
                (float(loss.detach()), batch.group_ids.clone(), batch.image.clone(), batch.rays.origins.clone())
            )
            drawn = trainer._drawn_ahead
            if draw_ahead and step < 2:
                assert drawn is not None and drawn[0] == step + 1, "the next step's batch is drawn during this step"
            else:
                assert drawn is None, "nothing is drawn past the last step, nor without draw-ahead"
        runs[draw_ahead] = rows
    for plain, ahead in zip(runs[False], runs[True], strict=True):
        assert plain[0] == ahead[0], "losses are bit-identical"
        assert all(torch.equal(a, b) for a, b in zip(plain[1:], ahead[1:], strict=True))


def test_non_finite_step_names_its_own_batch_not_the_one_drawn_ahead(synthetic_root, tmp_path, monkeypatch):  # noqa: F811
    from bts_studio.methods.bts.pipeline import BTSPipeline
    from bts_studio.utils.trainer import NonFiniteTrainingError

    original = BTSPipeline.get_train_loss_dict
    seen = {}

    def poisoned(self, step: int):
        outputs, losses, metrics = original(self, step)
        seen[step] = trainer._last_train_batch
        if step == 2:
            losses = {name: value * float("nan") for name, value in losses.items()}
        return outputs, losses, metrics

    monkeypatch.setattr(BTSPipeline, "get_train_loss_dict", poisoned)
    config, trainer = tiny_trainer(synthetic_root, tmp_path, 5, draw_ahead=True)
    with pytest.raises(NonFiniteTrainingError, match=r"training step 2 produced a non-finite loss") as error:
        trainer.train()  # nerfstudio's loop, with a save after every step
    assert trainer._drawn_ahead is not None and trainer._drawn_ahead[0] == 3, "step 3 was drawn before the check"
    assert trainer._last_train_batch is seen[2], "the error is about step 2's batch"
    assert f"Batch images: {trainer._batch_files()}." in str(error.value)
    checkpoints = sorted((config.get_base_dir() / "nerfstudio_models").glob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["step-000000001.ckpt"], "nothing is saved at or after the bad step"
