"""eval-occupancy and render-bev command lines: refusals, argument checks, and panel composition."""

import numpy as np
import pytest
import yaml
from nerfstudio.configs.base_config import MachineConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig

from bts_studio.data.shapenet.srn_dataparser import ShapeNetSRNDataParserConfig
from bts_studio.eval import bev_cli, occupancy_cli
from bts_studio.eval.bev_panels import BevGrid, compose_panels


def shapenet_run_config(tmp_path):
    config = TrainerConfig(
        method_name="srn",
        machine=MachineConfig(device_type="cpu"),
        pipeline=VanillaPipelineConfig(
            datamanager=VanillaDataManagerConfig(dataparser=ShapeNetSRNDataParserConfig(data=tmp_path / "cars"))
        ),
    )
    path = tmp_path / "config.yml"
    path.write_text(yaml.dump(config))
    return path


@pytest.mark.parametrize("tool", ["occupancy", "bev"])
def test_refuses_a_run_without_lidar(tmp_path, tool):
    config = shapenet_run_config(tmp_path)
    with pytest.raises(SystemExit, match="ShapeNetSRNDataParser dataparser, which has no lidar"):
        if tool == "occupancy":
            occupancy_cli.main(["--load-config", str(config), "--output-path", str(tmp_path / "occ.json")])
        else:
            bev_cli.main(["--load-config", str(config), "--output-dir", str(tmp_path / "bev")])
    assert not (tmp_path / "occ.json").exists()


def test_missing_config_and_existing_output_are_clear_errors(tmp_path):
    with pytest.raises(SystemExit, match="config file not found"):
        occupancy_cli.main(["--load-config", str(tmp_path / "nope.yml"), "--output-path", str(tmp_path / "o.json")])
    existing = tmp_path / "occ.json"
    existing.write_text("{}")
    with pytest.raises(SystemExit, match="pass --overwrite"):
        occupancy_cli.main(["--load-config", str(tmp_path / "nope.yml"), "--output-path", str(existing)])
    assert existing.read_text() == "{}"


def test_bev_grid_defaults_match_the_brief():
    grid = BevGrid()
    assert grid.resolution == (240, 200, 64)
    points = grid.points()
    assert points.shape == (64, 200, 240, 3)
    # row 0 is the far end (30 m), the last row the near end (5 m); camera height is level 0
    assert points[0, 0, 0, 2] > 29.0 and points[0, -1, 0, 2] < 6.0


def test_panels_compose_to_an_even_sized_frame():
    image = np.zeros((192, 640, 3), np.uint8)
    bev = np.zeros((25, 31, 3), np.uint8)
    frame = compose_panels([("input", image), ("depth", image)], [("model", bev), ("gt", bev)], bev_scale=2)
    assert frame.shape[0] == 50 and frame.shape[0] % 2 == 0 and frame.shape[1] % 2 == 0
    assert frame.dtype == np.uint8
