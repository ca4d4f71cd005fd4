"""Every ns-render subcommand on tiny bts-density and srn checkpoints, run in-process exactly as ``ns-render`` runs
them (``nerfstudio.scripts.render``'s classes and ``main``), plus ``bts-studio camera-path``.

The camera path's first frame must be the source view: PSNR >= 40 dB against the model's own render of the source
camera conditioned on the source image.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ns-render needs ffmpeg (make install adds it)")
SOURCE = {"bts": 1, "srn": 3}


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a - b) ** 2) + 1e-12))


@pytest.fixture(params=["bts", "srn"])
def run(request) -> tuple:
    return request.param, request.getfixturevalue(f"{request.param}_run")


def test_camera_path_starts_exactly_at_the_source_view(run, tmp_path, capsys, recwarn):
    from nerfstudio.scripts.render import RenderCameraPath
    from nerfstudio.utils.eval_utils import eval_setup

    from bts_studio.eval.camera_path_cli import main as camera_path

    method, config = run
    path = tmp_path / "path.json"
    index = SOURCE[method]
    camera_path(["--load-config", str(config), "--source-index", str(index), "--output", str(path), "--frames", "3"]
                + ["--forward-m", "0.5" if method == "srn" else "5", "--sideways-m", "0.1"])  # fmt: skip
    payload = json.loads(path.read_text())
    assert payload["bts_source"] == {"split": "train", "index": index} and "bts_intrinsics" in payload
    out = tmp_path / "frames"
    RenderCameraPath(load_config=config, camera_path_filename=path, output_path=out, output_format="images",
                     image_format="png", rendered_output_names=["rgb"]).main()  # fmt: skip
    logged = capsys.readouterr().out
    assert f"conditioning on train image {index}" in logged and "rule 'path source'" in logged, logged[-2000:]
    assert not [w for w in recwarn if "from scratch" in str(w.message)], "ns-render warned about ImageNet weights"
    frames = sorted(out.glob("*.png"))
    assert len(frames) == 3

    _, pipeline, _, _ = eval_setup(config, test_mode="inference")
    model = pipeline.model
    camera = pipeline.datamanager.train_dataset.cameras[index : index + 1].to(model.device)
    camera.metadata = {}  # the bare source camera; its source is given explicitly below
    if method == "bts":
        expected = model.render_camera(camera, model.source_view("train", index))["rgb"]
    else:
        code = model.latent_code_for_instance(int(model.image_instance_idx[index]))
        expected = model.render_camera(camera, code)["rgb"]
    first = read_png(frames[0])
    assert first.shape == tuple(expected.shape), (first.shape, tuple(expected.shape))
    score = psnr(first, expected.clamp(0, 1).numpy())
    with capsys.disabled():
        print(f"{method}: camera path frame 0 vs the model's render of the source camera: PSNR {score:.1f} dB")
    assert score >= 40.0, f"frame 0 is not the source view: PSNR {score:.1f} dB"
    assert psnr(read_png(frames[-1]), expected.numpy()) < score, "the path does not move"


def test_interpolate_spiral_and_dataset_render_at_the_dataset_size(run, tmp_path, capsys):
    from nerfstudio.scripts.render import DatasetRender, RenderInterpolated, SpiralRender
    from nerfstudio.utils.eval_utils import eval_setup

    method, config = run
    _, pipeline, _, _ = eval_setup(config, test_mode="inference")
    cameras = pipeline.datamanager.eval_dataset.cameras
    height, width = int(cameras.height[0]), int(cameras.width[0])
    common = dict(load_config=config, image_format="png", output_format="images")

    RenderInterpolated(**common, output_path=tmp_path / "interpolate", interpolation_steps=2,
                       rendered_output_names=["rgb", "depth"]).main()  # fmt: skip
    frames = sorted((tmp_path / "interpolate").glob("*.png"))
    assert frames and read_png(frames[0]).shape == (height, 2 * width, 3)  # rgb | depth side by side
    logged = capsys.readouterr().out
    expected_rule = "nearest training image" if method == "bts" else "default"
    assert f"rule '{expected_rule}'" in logged, logged[-2000:]

    SpiralRender(
        **common, output_path=tmp_path / "spiral", seconds=0.5, frame_rate=4, rendered_output_names=["rgb"]
    ).main()
    frames = sorted((tmp_path / "spiral").glob("*.png"))
    assert len(frames) == 2 and read_png(frames[0]).shape == (height, width, 3)
    logged = capsys.readouterr().out
    assert "radius" in logged and ("street" if method == "bts" else "object") in logged

    common.pop("output_format")
    DatasetRender(**common, output_path=tmp_path / "dataset", downscale_factor=2, split="test",
                  rendered_output_names=["rgb", "depth"]).main()  # fmt: skip
    rendered = sorted((tmp_path / "dataset" / "test" / "rgb").rglob("*.png"))
    assert rendered and read_png(rendered[0]).shape == (height // 2, width // 2, 3)


def test_every_dataparser_of_ours_takes_ns_render_dataset_downscale_factor():
    # nerfstudio's DatasetRender asserts hasattr(dataparser config, "downscale_factor") before setting it.
    from bts_studio import dataparser_configs

    specifications = [value for name, value in vars(dataparser_configs).items() if name.endswith("_dataparser")]
    assert len(specifications) >= 4
    for specification in specifications:
        assert hasattr(specification.config, "downscale_factor"), type(specification.config).__name__


def test_a_camera_idx_past_the_end_fails_with_the_valid_range(bts_run, tmp_path):
    from nerfstudio.scripts.render import RenderInterpolated

    with pytest.raises(IndexError, match=r"valid: 0\.\."):
        RenderInterpolated(load_config=bts_run, output_path=tmp_path / "x", output_format="images", camera_idx=999,
                           interpolation_steps=1).main()  # fmt: skip


def test_bts_outputs_show_what_the_field_knows_beyond_depth(bts_run):
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(bts_run, test_mode="inference")
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    outputs = pipeline.model.get_outputs_for_camera(camera)
    names = list(outputs)
    assert names.index("outside_source") < names.index("accumulation") and names[-1] != "rgb"
    assert "occupancy_behind_surface" in outputs
    for name in ("outside_source", "occupancy_behind_surface"):
        assert outputs[name].shape[-1] == 1 and bool(((outputs[name] >= 0) & (outputs[name] <= 1)).all()), name
    assert torch.isfinite(outputs["occupancy_behind_surface"]).all()
