"""benchmarks/occluder_supervised_check.py --loss oracle with a trained checkpoint (issue 18's MODEL_FIELDS), on the
shared tiny synthetic set and its two-step bts-density-tiny run (tests/eval/conftest.py)."""

import argparse
import math

import pytest
import torch

HEIGHT, WIDTH = 64, 160  # the shared run's parsed size (tests/eval/conftest.py)


@pytest.fixture(scope="module")
def script(load_benchmark):
    return load_benchmark("occluder_supervised_check")


def oracle_args(synthetic_root, checkpoint, tmp_path, **overrides):
    args = dict(
        data=synthetic_root, loss="oracle", steps=1, eval_every=100, frames=[2, 3], height=HEIGHT, width=WIDTH,
        groups=2, rays=512, lr=1e-4, mlp_lr=None, decoder_lr=None, automask=False, no_augment=True, no_fisheye=False,
        near=3.0, num_samples=16, visibility=False, visibility_margin=0.5, seed=0, work=tmp_path, output_json=None,
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
    # Shadowed patches exist on these batches, the two edits differ there, and the share is defined.
    assert summary["shadowed_patches"] > 0
    assert summary["model_hidden_exact_shadowed"] != pytest.approx(summary["model_hidden_filled_shadowed"], rel=1e-3)
    assert summary["model_hidden_changed_patches"] > 0
    share = summary["model_hidden_exact_better_share_all"]
    gain = summary["model_hidden_exact_gain_all"]
    assert 0.0 <= share <= 1.0 and math.isfinite(gain)
    # A shadowed patch's loss is its kept pixels' error, the discarded ones counted as 0 (BTS's rule): the split
    # into the two parts adds back up to the loss, for every field.
    for name in ("exact", "filled", "model"):
        kept_error, discarded = (
            summary[f"{name}_shadowed_kept_pixel_error"],
            summary[f"{name}_shadowed_discarded_share"],
        )
        assert summary[f"{name}_shadowed"] == pytest.approx(kept_error * (1.0 - discarded), rel=1e-4)


def test_unusable_checkpoints_are_refused_by_path_before_any_work(script, synthetic_root, trained_config, tmp_path):
    run = trained_config.parent
    cases = [(tmp_path / "no_run", "no_run: expected a step-\\*.ckpt")]
    garbage = tmp_path / "garbage" / "step-000000001.ckpt"
    garbage.parent.mkdir()
    garbage.write_bytes(b"not a checkpoint")
    cases.append((garbage, "not a torch checkpoint"))
    empty = tmp_path / "empty" / "step-000000001.ckpt"
    empty.parent.mkdir()
    torch.save({"pipeline": {}, "step": 1}, empty)
    cases.append((empty, "no model weights"))
    for path, message in cases:
        with pytest.raises(SystemExit, match=message):
            script.read_checkpoint(path, near=3.0, num_samples=16)
    # The run trained with 16 samples per ray: scoring it at 32 would be another field.
    with pytest.raises(SystemExit, match="trained with num_samples 16 \\(asked 32\\)"):
        script.read_checkpoint(run, near=3.0, num_samples=32)
    assert script.read_checkpoint(run, near=3.0, num_samples=16)["step"] >= 1
    # Without --num-samples the oracle renders at the preset's 32: that, too, is refused for this 16-sample run.
    args = oracle_args(synthetic_root, run, tmp_path, num_samples=None)
    with pytest.raises(SystemExit, match="trained with num_samples 16 \\(asked 32\\)"):
        script.read_checkpoint(run, near=3.0, num_samples=script.samples_per_ray(args))


def test_a_checkpoint_missing_weights_is_refused_not_loaded_loosely(script, synthetic_root, trained_config, tmp_path):
    """nerfstudio's load_pipeline would fall back to a non-strict load; the oracle refuses instead."""
    checkpoint = script.read_checkpoint(trained_config.parent, near=3.0, num_samples=16)
    dropped = next(iter(checkpoint["weights"]))
    checkpoint["weights"] = {k: v for k, v in checkpoint["weights"].items() if k != dropped}
    pipeline = script.build_pipeline(oracle_args(synthetic_root, None, tmp_path), tmp_path)
    with pytest.raises(SystemExit, match=f"1 missing and 0 unexpected keys \\(first: {dropped}\\)"):
        script.load_checkpoint(pipeline, checkpoint)
