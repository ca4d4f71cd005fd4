"""Entry-point module for ``nerfstudio.dataparser_configs``: one DataParserSpecification per parser.

nerfstudio imports this module from inside its datamanager module, so it may import only
dataparser-level code (``base_dataparser``, ``cameras``, ``scene_box``, ``registry_dataparser``),
never datamanagers, pipelines or the trainer. The entry-point name is the CLI subcommand.
"""

from nerfstudio.plugins.registry_dataparser import DataParserSpecification

from bts_studio.data.deepvoxels.dataparser import DeepVoxelsDataParserConfig
from bts_studio.data.kitti360.dataparser import Kitti360DataParserConfig
from bts_studio.data.shapenet.dvr_dataparser import ShapeNetDVRDataParserConfig
from bts_studio.data.shapenet.srn_dataparser import ShapeNetSRNDataParserConfig

kitti360_dataparser = DataParserSpecification(
    config=Kitti360DataParserConfig(),
    description="Real KITTI-360 as downloaded (perspective stereo, fisheyes resampled as BTS does, lidar depth).",
)

shapenet_srn_dataparser = DataParserSpecification(
    config=ShapeNetSRNDataParserConfig(),
    description="ShapeNet renderings in SRN's layout (srn_cars, srn_chairs): per-instance indices, few-shot views.",
)

shapenet_dvr_dataparser = DataParserSpecification(
    config=ShapeNetDVRDataParserConfig(),
    description="ShapeNet renderings in DVR's layout (.lst splits, masks, depth, point clouds).",
)

deepvoxels_dataparser = DataParserSpecification(
    config=DeepVoxelsDataParserConfig(),
    description="DeepVoxels scenes (train|validation|test/<scene>/rgb, pose; five-line intrinsics.txt).",
)
