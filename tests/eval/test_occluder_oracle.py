"""benchmarks/occluder_supervised_check.py --loss oracle with a trained checkpoint (issue 18's MODEL_FIELDS), on the
shared tiny synthetic set and its two-step bts-density-tiny run (tests/eval/conftest.py)."""

import argparse
import sys

import pytest
import torch

HEIGHT, WIDTH = 64, 160  # the shared run's parsed size (tests/eval/conftest.py)


@pytest.fixture(scope="module")
def script(load_benchmark):
    return load_benchmark("occluder_supervised_check")


def oracle_args(synthetic_root, checkpoint, tmp_path, **overrides):
    args = dict(
        data=synthetic_root, loss="oracle", steps=1, eval_every=100, frames=[2, 3], height=HEIGHT, width=WIDTH,
        groups=1, rays=64, lr=1e-4, mlp_lr=None, decoder_lr=None, automask=False, no_augment=True, no_fisheye=False,
        near=3.0, num_samples=None, visibility=False, visibility_margin=0.5, seed=0, work=tmp_path, output_json=None,
        preset="tiny", checkpoint=checkpoint,
    )  # fmt: skip
    args.update(overrides)
    return argparse.Namespace(**args)


def test_the_model_field_is_the_trained_models_own_loss(script, synthetic_root, trained_config, tmp_path):
    """The oracle's ``model`` field scores the loaded model unchanged: its mean per-patch loss is the pipeline's own
    photometric loss on the same batch (the function training runs), and the two edits of it are scored beside."""
    from bts_studio.eval.occupancy_protocol import Kitti360Calibration

    args = oracle_args(synthetic_root, trained_config.parent / "nerfstudio_models", tmp_path)
    pipeline = script.build_pipeline(args, tmp_path)
    trained = torch.load(sorted((trained_config.parent / "nerfstudio_models").glob("*.ckpt"))[-1], weights_only=False)
    name, value = next((k, v) for k, v in trained["pipeline"].items() if k.endswith("weight") and v.dim() == 4)
    assert torch.equal(pipeline.state_dict()[name], value), "the checkpoint's weights are the ones scored"
    pipeline.model.train()
    calibration = Kitti360Calibration(synthetic_root, "2013_05_28_drive_0000_sync")
    gt = script.GroundTruth(pipeline, HEIGHT, WIDTH, calibration)
    state = torch.get_rng_state()
    summary = script.oracle_losses(pipeline, gt, calibration, steps=1, trained=True)
    torch.set_rng_state(state)
    with torch.no_grad():
        _, loss_dict, _ = pipeline.get_train_loss_dict(0)
    # The loss dict carries BTS's coarse + fine copies (photometric_weight 2); the oracle reports the loss function.
    weight = pipeline.model.config.photometric_weight
    assert summary["model_all"] == pytest.approx(float(loss_dict["photometric_loss"]) / weight, rel=1e-5)
    for key in ("model_hidden_exact_all", "model_hidden_filled_all", "model_hidden_exact_better_share"):
        assert key in summary
    assert summary["model_hidden_filled_all"] != pytest.approx(summary["model_all"]), "the edit changes the field"


def test_a_missing_checkpoint_is_refused_with_its_path(script, synthetic_root, tmp_path, monkeypatch):
    missing = tmp_path / "no_run"
    argv = ["occluder_supervised_check.py", "--data", str(synthetic_root), "--loss", "oracle", "--checkpoint"]
    monkeypatch.setattr(sys, "argv", [*argv, str(missing), "--work", str(tmp_path)])
    with pytest.raises(SystemExit, match="--checkpoint .*no_run: expected a step-\\*.ckpt"):
        script.main()
    assert not list(tmp_path.glob("*.json")), "nothing is written for a refused run"
