"""Entry-point module for ``nerfstudio.method_configs``: one MethodSpecification per method and preset.

Every ns-* command imports this module (through nerfstudio's registry), so it must stay cheap and must
never raise: it imports only configs. It must not import ``nerfstudio.configs.method_configs``,
``nerfstudio.utils.eval_utils`` or ``nerfstudio.scripts.*`` (circular imports). Presets are overrides
of one base config per method.
"""

from bts_studio.methods.bts.method_config import bts_density_method, bts_density_tiny_method
from bts_studio.methods.deepvoxels.method_config import deepvoxels_method, deepvoxels_tiny_method
from bts_studio.methods.dvr.method_config import (
    dvr_combined_method,
    dvr_depth_method,
    dvr_method,
    dvr_multiview_method,
    dvr_tiny_method,
)
from bts_studio.methods.srn.method_config import srn_method, srn_single_scene_method

srn = srn_method
srn_single_scene = srn_single_scene_method
bts_density = bts_density_method
bts_density_tiny = bts_density_tiny_method
deepvoxels = deepvoxels_method
deepvoxels_tiny = deepvoxels_tiny_method
dvr = dvr_method
dvr_depth = dvr_depth_method
dvr_combined = dvr_combined_method
dvr_multiview = dvr_multiview_method
dvr_tiny = dvr_tiny_method
