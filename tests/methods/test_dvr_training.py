"""Tiers 3-4: dvr-tiny and dvr-multiview train two steps through nerfstudio's train_loop on generated data,
then the trained pipeline renders a camera, extracts a mesh and runs DVR's evaluation."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from bts_studio.data.shapenet.dvr_dataparser import ShapeNetDVRDataParserConfig
from bts_studio.methods.dvr.method_config import dvr_multiview_trainer_config, dvr_tiny_trainer_config


@pytest.fixture(scope="module")
def data(tmp_path_factory, synth_tiny_dvr) -> Path:
    out = tmp_path_factory.mktemp("dvr_data") / "synthetic"
    return synth_tiny_dvr(out, instances=2, views=3, input_views=2, extra=("--dtu-scene", "--dtu-views", "4"))


def _train(config, data: Path, output_dir: Path):
    from nerfstudio.scripts.train import train_loop

    config.set_timestamp()
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.max_num_iterations = 2
    config.steps_per_eval_batch = 1
    config.steps_per_eval_image = 1
    config.output_dir = output_dir
    config.viewer.quit_on_train_completion = True
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.dataparser = ShapeNetDVRDataParserConfig()
    config.pipeline.model.hidden_size = 16
    config.pipeline.model.initial_proposals = 6
    config.pipeline.model.eval_proposals = 8
    config.pipeline.datamanager.images_per_batch = 2
    config.pipeline.datamanager.rays_per_image = 48
    config.pipeline.mesh.resolution_0 = 8
    config.pipeline.mesh.upsampling_steps = 1
    config.pipeline.eval_num_points = 2000
    config.pipeline.eval_views_per_object = 1
    config.save_config()
    train_loop(local_rank=0, world_size=1, config=config)
    return config.get_base_dir() / "config.yml"


def _check_mesh_refinement_runs(pipeline) -> None:
    """The pipeline's mesh path runs DVR's refinement (on by default) before the colours; 0 steps switch it off.

    A two-step model has no surface yet, so a sphere's logits are added to the network's for this check (the
    network stays in the graph: refinement differentiates it twice).
    """
    from bts_studio.methods.dvr.datamanager import SPLIT_CODES

    pipeline.eval()  # the encoder's batch norm sees one image
    code = pipeline.code_for(SPLIT_CODES["test"], 0)
    trained_occupancy = pipeline.model.occupancy
    pipeline.model.occupancy = lambda points, latent: trained_occupancy(points, latent) + 40 * (
        0.3 - points.norm(dim=-1)
    )
    try:
        assert pipeline.config.mesh.refinement_steps == 30, "DVR's default"
        refined = pipeline.extract_mesh(code)
        pipeline.config.mesh.refinement_steps = 0
        plain = pipeline.extract_mesh(code)
    finally:
        pipeline.config.mesh.refinement_steps = 30
        pipeline.model.occupancy = trained_occupancy
    assert len(plain.faces) > 100 and np.array_equal(plain.faces, refined.faces)
    moved = np.linalg.norm(np.asarray(refined.vertices) - np.asarray(plain.vertices), axis=-1)
    assert moved.max() > 0 and moved.max() < 3e-3, "30 RMSprop steps of lr 1e-5 move vertices by ~1e-3 at most"
    assert refined.visual.vertex_colors.shape == (len(refined.vertices), 4)


@pytest.mark.parametrize("preset", ["dvr", "dvr-multiview"])
def test_two_training_steps_then_eval(data, tmp_path, preset, load_benchmark, capsys):
    if preset == "dvr":
        config = dvr_tiny_trainer_config()
        data_path = data / "dvr"
    else:
        config = dvr_multiview_trainer_config()
        config.pipeline.model.num_blocks = 2
        data_path = data / "dtu" / "scan1"
    config_path = _train(config, data_path, tmp_path)
    checkpoints = list((config_path.parent / "nerfstudio_models").glob("*.ckpt"))
    assert checkpoints, "train_loop saved a checkpoint"

    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
    metrics = pipeline.get_average_eval_image_metrics(output_path=tmp_path / "eval", get_std=True)
    for key in ("chamfer_l1", "chamfer_l1_x10", "accuracy", "completeness", "normal_consistency", "fscore", "psnr"):
        assert key in metrics and np.isfinite(metrics[key]), key
    assert metrics["chamfer_l1_x10"] == pytest.approx(10 * metrics["chamfer_l1"])
    assert 0 <= metrics["num_empty_meshes"] <= metrics["num_objects"] and "fscore_threshold_std" not in metrics
    assert metrics["num_objects_without_pointcloud"] == 0
    clouds = pipeline.datamanager.eval_dataset.metadata["pointcloud_filenames"]
    pipeline.datamanager.eval_dataset.metadata["pointcloud_filenames"] = [None] * len(clouds)  # none on disk
    pipeline.config.eval_views_per_object = 0
    without = pipeline.get_average_eval_image_metrics()
    assert without["num_objects_without_pointcloud"] == without["num_objects"] and "chamfer_l1" not in without
    assert "no pointcloud.npz" in capsys.readouterr().out
    pipeline.datamanager.eval_dataset.metadata["pointcloud_filenames"] = clouds
    json.dumps(metrics)
    camera, _ = pipeline.datamanager.eval_image(0)
    outputs = pipeline.model.get_outputs_for_camera(camera)
    assert outputs["rgb"].shape == (24, 24, 3) and outputs["normals"].shape == (24, 24, 3)
    assert torch.isfinite(outputs["depth"]).all()
    _check_mesh_refinement_runs(pipeline)

    from bts_studio.cli import entrypoint

    mesh_path = tmp_path / "mesh.ply"
    args = ["export-mesh", "--load-config", str(config_path), "--output", str(mesh_path), "--resolution-0", "8"]
    args += ["--upsampling-steps", "1"]
    if preset == "dvr":
        args += ["--source-image", str(sorted((data / "dvr").glob("*/*/image/0000.png"))[0])]
    entrypoint(args)
    assert mesh_path.is_file()
    with pytest.raises(SystemExit, match="overwrite"):
        entrypoint(args)
    if preset == "dvr":
        _check_nc_breakdown_of_a_run(load_benchmark("dvr_baselines"), config_path, data / "dvr", tmp_path)


def _check_nc_breakdown_of_a_run(module, config_path: Path, data: Path, tmp_path: Path) -> None:
    """benchmarks/dvr_baselines.py (``module``) nc-breakdown --source run extracts and scores the run's test meshes."""
    import sys

    out = tmp_path / "nc.json"
    argv = ["dvr_baselines.py", "nc-breakdown", "--source", "run", "--load-config", str(config_path), "--data",
            str(data), "--out", str(out), "--objects", "1", "--num-points", "500", "--mesh-resolution-0", "8",
            "--mesh-upsampling-steps", "1", "--refinement-steps", "0"]  # fmt: skip
    original = sys.argv
    sys.argv = argv
    try:
        module.main()
    finally:
        sys.argv = original
    result = json.loads(out.read_text())
    assert result["num_test_objects"] == 1 and np.isfinite(result["mean"]["normal_consistency"])


def test_training_step_makes_two_host_syncs(data, tmp_path):
    """Issue 13: one dvr-tiny training step (``next_train``, encoder, ``get_outputs``, metrics, losses, backward)
    reads the device back twice: the hit rays' ``nonzero`` (the secant search runs on hits only) and one
    ``.tolist()`` of the freespace / occupancy point counts. The one other sync op counted here is ``lift_fresh``
    of ShardedOrder's objects, a CPU tensor that reaches a GPU from pinned memory without waiting. (The plugin
    trainer's non-finite check adds one more per step; Adam's step counters live on the CPU.)"""
    from bts_studio.utils.profiling import count_host_reads, count_ops

    config = dvr_tiny_trainer_config()
    config.set_timestamp()
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.output_dir = tmp_path
    config.pipeline.datamanager.data = data / "dvr"
    config.pipeline.datamanager.images_per_batch = 2
    config.pipeline.model.hidden_size = 16
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    pipeline = trainer.pipeline
    # A sphere added to the field (as _check_mesh_refinement_runs): rays hit, so every loss term runs.
    network = pipeline.model.occupancy
    pipeline.model.occupancy = lambda points, latent: network(points, latent) + 40 * (0.3 - points.norm(dim=-1))
    terms = {}

    def step() -> None:
        _, loss_dict, _ = pipeline.get_train_loss_dict(step=0)
        sum(loss_dict.values()).backward()
        terms.update(loss_dict)

    step()
    assert {"rgb_loss", "freespace_loss", "occupancy_loss", "normal_loss"} <= set(terms), set(terms)
    assert float(terms["rgb_loss"]) > 0 and float(terms["normal_loss"]) > 0
    ops = count_ops(step)
    reads = count_host_reads(step)
    assert ops["sync_by_op"] == {"aten::nonzero": 1, "aten::lift_fresh": 1}, ops["sync_by_op"]
    assert reads == {"tolist": 1}, reads


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ns-render needs ffmpeg (make install adds it)")
def test_ns_render_spiral_and_interpolate_on_a_dvr_run(data, tmp_path, monkeypatch):
    """``ns-render spiral`` (it starts from the eval loader's camera 0; nerfstudio reads
    ``datamanager.eval_dataloader``) and ``interpolate`` render a dvr run at the data's size, and the spiral's frames
    are conditioned on the object of the camera it starts from (test object 0), not on training object 0; a
    ``bts-studio camera-path`` renders the object of its stored source, and ``--camera-idx`` past the end fails."""
    from nerfstudio.scripts.render import RenderInterpolated, SpiralRender

    from bts_studio.methods.dvr.datamanager import SPLIT_CODES, DVRDataManager

    config_path = _train(dvr_tiny_trainer_config(), data / "dvr", tmp_path)
    chosen = []
    original = DVRDataManager.object_of_camera

    def spy(self, camera):
        chosen.append(original(self, camera))
        return chosen[-1]

    monkeypatch.setattr(DVRDataManager, "object_of_camera", spy)
    common = dict(load_config=config_path, image_format="png", output_format="images", rendered_output_names=["rgb"])
    SpiralRender(**common, output_path=tmp_path / "spiral", seconds=0.5, frame_rate=4).main()
    frames = sorted((tmp_path / "spiral").glob("*.png"))
    assert len(frames) == 2
    from PIL import Image

    assert Image.open(frames[0]).size == (24, 24)
    assert chosen and set(chosen) == {(SPLIT_CODES["test"], 0)}, chosen
    RenderInterpolated(**common, output_path=tmp_path / "interpolate", interpolation_steps=1).main()
    assert sorted((tmp_path / "interpolate").glob("*.png"))

    # bts-studio camera-path from training image 3 (object 1 of 3-view objects): every frame shows object 1,
    # as the JSON says (the path source used to be ignored: training object 0).
    from nerfstudio.scripts.render import RenderCameraPath

    from bts_studio.eval.camera_path_cli import main as camera_path
    from bts_studio.methods.common.conditioning_rules import SPLIT_IDS

    assert SPLIT_IDS == SPLIT_CODES, "a path source's split code is read as dvr's"
    path = tmp_path / "path.json"
    camera_path(["--load-config", str(config_path), "--source-index", "3", "--output", str(path), "--frames", "2"])
    # Object-sized default path (0.2 x the camera's distance to the object), not a street's 10 m through it.
    import json

    first, last = (torch.tensor(pose["camera_to_world"]).reshape(4, 4)[:3, 3] for pose in
                   [json.loads(path.read_text())["camera_path"][k] for k in (0, -1)])  # fmt: skip
    assert float((last - first).norm()) == pytest.approx(0.2 * float(first.norm()), rel=1e-6)
    chosen.clear()
    RenderCameraPath(**common, output_path=tmp_path / "path", camera_path_filename=path).main()
    assert len(sorted((tmp_path / "path").glob("*.png"))) == 2
    assert chosen and set(chosen) == {(SPLIT_CODES["train"], 1)}, chosen
    with pytest.raises(IndexError, match=r"--camera-idx 999 .*valid: 0\.\.5"):
        RenderInterpolated(**common, output_path=tmp_path / "x", camera_idx=999, interpolation_steps=1).main()
