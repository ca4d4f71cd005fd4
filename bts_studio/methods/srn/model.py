"""SRN (Sitzmann, Zollhöfer, Wetzstein, NeurIPS 2019) as a nerfstudio model.

One step: latent code z of each ray's instance -> hypernetwork -> scene function phi -> LSTM ray marcher
(10 steps) -> phi at the final point -> pixel generator -> colour. Rays of the same instance share one
predicted phi, so a batch is grouped by instance (``bts_studio.core.ray_groups``) and evaluated as
``[instances, rays]``. In single-scene mode (``single_scene=True``) a plain phi is trained directly and
there are no codes.

Outputs (per ray; ``get_outputs_for_camera`` adds ``normals``):

- ``rgb``: colour in [0, 1] (the pixel generator's [-1, 1] output, mapped and clipped);
- ``rgb_signed``: the raw pixel-generator output in SRN's [-1, 1] space (the loss uses it);
- ``depth``: signed distance along the unit ray to the marcher's final point (nerfstudio's convention);
- ``z_depth``: camera-space z of that point, what SRN returns and regularises (docs/conventions.md, "Depth");
- ``accumulation``: ones. SRN renders a surface point per ray and has no opacity; ones keep nerfstudio's
  depth colormaps and ``get_rgba_image`` working;
- ``normals`` (whole images only): world-frame normals from finite differences of the depth map
  (``bts_studio.core.depth_normals``), encoded as ``(n + 1) / 2`` like nerfstudio's normal outputs.

Which instance a camera shows (``get_outputs_for_camera``; viewer, ns-render, ns-eval): the camera's
``metadata["instance_idx"]`` tensor, else its ``cam_idx`` (the viewer's last clicked training camera,
``ns-render --camera-idx``) mapped through the training image -> instance table, else
``config.default_instance``.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Type, Union

import torch
from jaxtyping import Float, Int
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.model_components.renderers import RGBRenderer
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from torch import Tensor, nn
from torch.nn import Parameter

from bts_studio.core.depth_normals import normals_from_ray_depth
from bts_studio.core.image_quality import psnr, ssim
from bts_studio.core.ray_groups import from_padded, group_by_key, to_padded
from bts_studio.methods.common.cameras import camera_rays
from bts_studio.methods.common.rendering import render_in_chunks
from bts_studio.methods.common.source_selector import SourceSelector
from bts_studio.methods.srn.batch import SRNBatch
from bts_studio.methods.srn.hypernetwork import HyperFC, SharedSceneFunction
from bts_studio.methods.srn.losses import latent_prior, negative_depth_penalty, signed_image_loss
from bts_studio.methods.srn.mlp import LayerNormMLP
from bts_studio.methods.srn.pixel_generator import PixelGenerator, signed_to_unit_rgb
from bts_studio.methods.srn.raymarcher import LSTMRayMarcher, SceneFunction


@dataclass
class SRNModelConfig(ModelConfig):
    """Scene Representation Networks; defaults are the official code's (classics.md A.1, A.2)."""

    _target: Type = field(default_factory=lambda: SRNModel)
    """The model class this config builds."""
    enable_collider: bool = False
    """SRN marches from the camera itself (initial z-depth 0.05); nerfstudio's near/far collider is unused."""
    eval_num_rays_per_chunk: int = 16384
    """Rays per forward pass when rendering whole images (one 128x128 image)."""
    single_scene: bool = False
    """Fit one scene with a plain phi (SRN's ``--fit_single_srn``): no hypernetwork, no latent codes."""
    latent_dim: int = 256
    """Width of the per-instance latent code z (SRN ``--embedding_size``)."""
    latent_init_std: float = 0.01
    """Codes start as N(0, std^2), for training instances and for few-shot fitting alike."""
    phi_hidden: int = 256
    """Width of phi's layers and of its output feature."""
    phi_layers: int = 4
    """Layers of phi, input and output included (3 -> 256 -> 256 -> 256 -> 256)."""
    hyper_hidden: int = 256
    """Hidden width of each per-layer hypernetwork."""
    hyper_num_hidden_layers: int = 1
    """Hidden->hidden layers of each hypernetwork (three linear layers in all)."""
    marcher_hidden: int = 16
    """LSTM hidden size of the ray marcher."""
    marcher_steps: int = 10
    """Ray-marching steps (SRN ``--tracing_steps``)."""
    initial_z_mean: float = 0.05
    """Mean camera-space z-depth where marching starts."""
    initial_z_std: float = 5.0e-4
    """Standard deviation of that start depth while training (the mean is used otherwise)."""
    rendering_layers: int = 5
    """SRN's ``rendering_layers``; the pixel generator gets six linear layers from the default, as SRN's code."""
    image_loss_weight: float = 200.0
    """Weight of the MSE in [-1, 1] colour space (SRN ``--l1_weight``, which is an L2)."""
    depth_reg_weight: float = 1.0e-3
    """Weight of ``1e4 * mean(min(z, 0)^2)`` (SRN ``--reg_weight``; effective coefficient 10)."""
    latent_reg_weight: float = 1.0
    """Weight of the latent prior ``mean(z^2)`` (SRN ``--kl_weight``)."""
    default_instance: int = 0
    """Instance rendered for cameras that name none (no ``instance_idx`` or ``cam_idx`` metadata)."""


class SRNModel(Model):
    """SRN: auto-decoded latent codes, a hypernetwork, an LSTM ray marcher and a per-pixel generator."""

    config: SRNModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        config = self.config
        metadata = self.kwargs.get("metadata") or {}
        if config.single_scene:
            self.phi = LayerNormMLP(3, config.phi_hidden, config.phi_layers - 2, config.phi_hidden)
            self.num_instances = 1
        else:
            if "num_instances" not in metadata:
                raise ValueError(
                    "srn needs the number of object instances in the dataparser metadata ('num_instances'); "
                    "use the shapenet-srn-data dataparser, or --pipeline.model.single-scene True for one scene"
                )
            self.num_instances = int(metadata["num_instances"])
            self.latent_codes = nn.Embedding(self.num_instances, config.latent_dim)
            nn.init.normal_(self.latent_codes.weight, mean=0.0, std=config.latent_init_std)
            self.hyper_phi = HyperFC(
                latent_dim=config.latent_dim,
                in_features=3,
                hidden_features=config.phi_hidden,
                num_hidden_layers=config.phi_layers - 2,
                out_features=config.phi_hidden,
                hyper_hidden=config.hyper_hidden,
                hyper_num_hidden_layers=config.hyper_num_hidden_layers,
            )
        self.ray_marcher = LSTMRayMarcher(
            feature_dim=config.phi_hidden,
            hidden_dim=config.marcher_hidden,
            num_steps=config.marcher_steps,
            initial_z_mean=config.initial_z_mean,
            initial_z_std=config.initial_z_std,
        )
        self.pixel_generator = PixelGenerator(config.phi_hidden, config.phi_hidden, config.rendering_layers)
        # Kept for Model.get_rgba_image; SRN's renderings have white backgrounds.
        self.renderer_rgb = RGBRenderer(background_color="white")
        self.instance_names: List[str] = list(metadata.get("instance_names", []))
        image_instance = metadata.get("image_instance_idx")
        image_instance = torch.zeros(0, dtype=torch.long) if image_instance is None else image_instance.long()
        self.register_buffer("image_instance_idx", image_instance.clone(), persistent=False)
        self.source_selector: Optional[SourceSelector] = None

    # ----------------------------------------------------------------------------------------------
    # parameters

    def network_parameters(self) -> List[Parameter]:
        """Everything but the latent codes: hypernetwork (or phi), ray marcher, pixel generator."""
        phi = self.phi if self.config.single_scene else self.hyper_phi
        modules = (phi, self.ray_marcher, self.pixel_generator)
        return [parameter for module in modules for parameter in module.parameters()]

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = {"networks": self.network_parameters()}
        if not self.config.single_scene:
            groups["latent_codes"] = [self.latent_codes.weight]
        return groups

    # ----------------------------------------------------------------------------------------------
    # rendering

    def scene_function(self, codes: Optional[Float[Tensor, "U D"]]) -> SceneFunction:
        """phi for ``U`` latent codes (ignored in single-scene mode), as a ``[U, R, 3] -> [U, R, F]`` callable."""
        if self.config.single_scene:
            return SharedSceneFunction(self.phi)
        assert codes is not None and codes.ndim == 2, "multi-instance SRN needs codes [U, D]"
        return self.hyper_phi(codes)

    def render_grouped(
        self,
        phi: SceneFunction,
        origins: Float[Tensor, "U R 3"],
        directions: Float[Tensor, "U R 3"],
        directions_norm: Float[Tensor, "U R 1"],
        jitter: Optional[bool] = None,
    ) -> Dict[str, Tensor]:
        """March and shade rays grouped by scene function; every output is ``[U, R, C]``.

        ``jitter`` randomises the marcher's start depth (default: in training mode).
        """
        points, distance = self.ray_marcher(phi, origins, directions, directions_norm, jitter)
        rgb_signed = self.pixel_generator(phi(points))
        return {
            "rgb": signed_to_unit_rgb(rgb_signed),
            "rgb_signed": rgb_signed,
            "depth": distance,
            "z_depth": distance / directions_norm,
            "accumulation": torch.ones_like(distance),
        }

    def ray_instances(self, ray_bundle: RayBundle) -> Int[Tensor, " N"]:
        """Instance of every ray: ``metadata["instance_idx"]``, else ``config.default_instance``."""
        num_rays = ray_bundle.origins.reshape(-1, 3).shape[0]
        if self.config.single_scene:
            return torch.zeros(num_rays, dtype=torch.long, device=ray_bundle.origins.device)
        indices = (ray_bundle.metadata or {}).get("instance_idx")
        if not isinstance(indices, Tensor):
            return torch.full((num_rays,), self._checked_instance(self.config.default_instance), device=self.device)
        indices = indices.reshape(-1).long()
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.num_instances):
            raise ValueError(
                f"ray instance indices span [{int(indices.min())}, {int(indices.max())}] but the model has "
                f"{self.num_instances} latent codes (one per training instance)"
            )
        return indices

    def get_outputs(self, ray_bundle: Union[RayBundle, Cameras]) -> Dict[str, Union[Tensor, List]]:
        """Render rays; every per-ray output has the bundle's shape ``[*batch, C]``.

        A bundle ``[U, R]`` whose rows each show one instance (what ``SRNDataManager`` yields) is rendered row by
        row as it is; any other bundle is grouped by instance first (``core.ray_groups``). Multi-instance models
        also return ``latent_codes`` ``[U, D]``, the codes used, for SRN's latent prior.
        """
        if isinstance(ray_bundle, Cameras):
            return self.get_outputs_for_camera(ray_bundle)
        batch_shape = tuple(ray_bundle.shape)
        directions_norm = (ray_bundle.metadata or {}).get("directions_norm")
        if not isinstance(directions_norm, Tensor):  # e.g. ns-export's synthetic probe ray
            directions_norm = torch.ones_like(ray_bundle.origins[..., :1])
        directions_norm = directions_norm.to(ray_bundle.origins)
        instances = self.ray_instances(ray_bundle).to(ray_bundle.origins.device).reshape(batch_shape)
        if len(batch_shape) == 2 and bool((instances == instances[:, :1]).all()):
            keys = instances[:, 0]  # one instance per row: the rows are the groups
            codes = None if self.config.single_scene else self.latent_codes(keys)
            outputs = self.render_grouped(
                self.scene_function(codes), ray_bundle.origins, ray_bundle.directions, directions_norm
            )
        else:
            groups = group_by_key(instances.reshape(-1))
            codes = None if self.config.single_scene else self.latent_codes(groups.keys)
            grouped = self.render_grouped(
                self.scene_function(codes),
                *(to_padded(x.reshape(-1, x.shape[-1]), groups) for x in (ray_bundle.origins, ray_bundle.directions)),
                to_padded(directions_norm.reshape(-1, 1), groups),
            )
            outputs = {name: from_padded(value, groups).reshape(*batch_shape, -1) for name, value in grouped.items()}
        if codes is not None:
            outputs["latent_codes"] = codes
        return outputs

    def render_rays_with_code(
        self,
        origins: Float[Tensor, "N 3"],
        directions: Float[Tensor, "N 3"],
        directions_norm: Float[Tensor, "N 1"],
        code: Optional[Float[Tensor, "1 D"]],
    ) -> Dict[str, Tensor]:
        """Render many rays of ONE scene (given latent code) in chunks; outputs ``[N, C]`` on the rays' device.

        Deterministic (no start-depth jitter) in any mode: renderings of cameras must not flicker.
        """
        phi = self.scene_function(code)

        def render(start: int, end: int) -> Dict[str, Tensor]:
            part = [x[start:end].to(self.device)[None] for x in (origins, directions, directions_norm)]
            return {name: value[0] for name, value in self.render_grouped(phi, *part, jitter=False).items()}

        return render_in_chunks(render, origins.shape[0], self.config.eval_num_rays_per_chunk, origins.device)

    @torch.no_grad()
    def render_camera(
        self, camera: Cameras, code: Optional[Float[Tensor, "1 D"]], obb_box: Optional[OrientedBox] = None
    ) -> Dict[str, Tensor]:
        """Render one camera's full image with the given latent code; outputs ``[H, W, C]``."""
        # nerfstudio's generate_rays, bit for bit, with one host sync for the frame (issue 17).
        rays = camera_rays(camera, obb_box)
        height, width = rays.origins.shape[:2]
        flat = self.render_rays_with_code(
            rays.origins.reshape(-1, 3), rays.directions.reshape(-1, 3), rays.directions_norm.reshape(-1, 1), code
        )
        outputs = {name: value.reshape(height, width, -1) for name, value in flat.items() if name != "rgb_signed"}
        normals = normals_from_ray_depth(rays.origins, rays.directions, outputs["depth"])
        outputs["normals"] = (normals + 1.0) * 0.5
        return outputs

    def latent_code_for_instance(self, instance: int) -> Optional[Float[Tensor, "1 D"]]:
        """The trained code of a training instance (None in single-scene mode)."""
        if self.config.single_scene:
            return None
        return self.latent_codes.weight[self._checked_instance(instance)][None]

    def resolve_camera_instance(self, camera: Cameras) -> int:
        """Instance a camera shows: metadata ``instance_idx``, else ``cam_idx`` -> training image -> instance."""
        metadata = camera.metadata or {}
        instance = metadata.get("instance_idx")
        if isinstance(instance, Tensor) and instance.numel():
            return int(instance.reshape(-1)[0])
        if self.source_selector is not None:  # attached by SRNPipeline: the shared source rules, logged
            return int(self.image_instance_idx[self.source_selector.choose(camera).index])
        cam_idx = metadata.get("cam_idx")
        if cam_idx is not None:
            cam_idx = int(cam_idx.reshape(-1)[0]) if isinstance(cam_idx, Tensor) else int(cam_idx)
            if 0 <= cam_idx < self.image_instance_idx.numel():
                return int(self.image_instance_idx[cam_idx])
        return self.config.default_instance

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: Optional[OrientedBox] = None) -> Dict[str, Tensor]:
        code = None if self.config.single_scene else self.latent_code_for_instance(self.resolve_camera_instance(camera))
        return self.render_camera(camera, code, obb_box)

    def _checked_instance(self, instance: int) -> int:
        if not 0 <= instance < self.num_instances:
            raise ValueError(f"instance {instance} does not exist: the model has {self.num_instances} instances")
        return instance

    # ----------------------------------------------------------------------------------------------
    # losses and metrics

    def srn_loss_terms(
        self,
        rgb_signed: Float[Tensor, "*batch 3"],
        target: Float[Tensor, "*batch 3"],
        z_depth: Float[Tensor, "*batch 1"],
        codes: Optional[Float[Tensor, "U D"]] = None,
    ) -> Dict[str, Tensor]:
        """SRN's weighted loss terms (``methods.srn.losses``); ``codes`` are the latent codes the rays used."""
        terms = {
            "rgb_loss": self.config.image_loss_weight * signed_image_loss(rgb_signed, target),
            "depth_reg": self.config.depth_reg_weight * negative_depth_penalty(z_depth),
        }
        if codes is not None:
            terms["latent_reg"] = self.config.latent_reg_weight * latent_prior(codes)
        return terms

    @staticmethod
    def _target_colours(batch: Union[SRNBatch, Dict[str, Any]]) -> Tensor:
        """Target colours of an :class:`SRNBatch` or of a nerfstudio image batch (``{"image": ...}``)."""
        return batch.image if isinstance(batch, SRNBatch) else batch["image"][..., :3]

    def get_metrics_dict(self, outputs, batch: Union[SRNBatch, Dict[str, Any]]) -> Dict[str, Tensor]:
        target = self._target_colours(batch).to(outputs["rgb"])
        mse = ((outputs["rgb"] - target) ** 2).mean().clamp_min(1e-10)
        return {"psnr": -10.0 * torch.log10(mse)}

    def get_loss_dict(self, outputs, batch: Union[SRNBatch, Dict[str, Any]], metrics_dict=None) -> Dict[str, Tensor]:
        target = self._target_colours(batch).to(outputs["rgb_signed"])
        return self.srn_loss_terms(outputs["rgb_signed"], target, outputs["z_depth"], outputs.get("latent_codes"))

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Any]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """PSNR and SSIM as scikit-image computes them (SRN's evaluation), on the clipped prediction."""
        prediction = outputs["rgb"]
        target = batch["image"][..., :3].to(prediction)
        metrics = {"psnr": float(psnr(prediction, target)), "ssim": float(ssim(prediction, target))}
        images = {
            "img": torch.cat([target, prediction], dim=1),
            "depth": colormaps.apply_depth_colormap(outputs["depth"]),
        }
        if "normals" in outputs:
            images["normals"] = outputs["normals"]
        return metrics, images
