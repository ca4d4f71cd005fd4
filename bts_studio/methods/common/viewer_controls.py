"""The viewer's source-image control, shared by every image-conditioned method.

nerfstudio's viewer installs any ``ViewerElement`` it finds on the pipeline's modules into a "Custom Elements"
folder of its Control tab, and hands any ``ViewerControl`` the running viewer. :class:`SourceControls` is an
``nn.Module`` without parameters (checkpoints are unchanged) holding:

- **Source rule**: ``Nearest training image`` (the default for views: the source follows the camera),
  ``Fixed image`` (split and index below) or ``Clicked camera frustum`` (nerfstudio's last clicked frustum);
- **Source split** and **Source index** for ``Fixed image``;
- **Fix nearest image** (freezes the current nearest image as a fixed source) and **Go to source view** (moves the
  viewer camera onto the source camera, with its vertical field of view, and hides the frustums within two frustum
  sizes of it, whose lines would cover the picture from their apex, until the source changes);
- **Active source**: index, file name, rule and a thumbnail, updated on every render that changes the source; the
  source camera is drawn as a larger orange frustum;
- **Frustum scale**: size of the training-camera frustums; the method's default replaces nerfstudio's 0.1 (1 cm in
  metres-scaled street scenes) when the viewer was started with that default.

Outside the viewer (``ns-render``, ``ns-eval``) no element is installed, :attr:`SourceControls.in_viewer` is False
and the rules of ``conditioning_rules.py`` apply unchanged.
"""

import base64
import io
import threading
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from nerfstudio.viewer.viewer_elements import (
    ViewerButton,
    ViewerControl,
    ViewerDropdown,
    ViewerElement,
    ViewerNumber,
    ViewerSlider,
    ViewerText,
)
from torch import nn

from bts_studio.methods.common.conditioning_rules import SourceCatalogue, SourceChoice, SourceRequest

NEAREST, FIXED, CLICKED = "Nearest training image", "Fixed image", "Clicked camera frustum"
SOURCE_RULES = (NEAREST, FIXED, CLICKED)
NERFSTUDIO_FRUSTUM_SCALE = 0.1
"""nerfstudio's ``--viewer.camera-frustum-scale`` default (viser units; 10 viser units are 1 scene unit)."""
VISER_SCALE = 10.0
"""nerfstudio's ``VISER_NERFSTUDIO_SCALE_RATIO``: viser units per scene unit."""
THUMBNAIL_WIDTH = 240


class ViewerMarkdown(ViewerElement[str]):
    """Markdown text in the viewer panel (used for the active source and its thumbnail)."""

    def __init__(self, name: str, content: str) -> None:
        super().__init__(name)
        self.content = content

    def _create_gui_handle(self, viser_server) -> None:
        self.gui_handle = viser_server.gui.add_markdown(self.content)

    def install(self, viser_server) -> None:
        self._create_gui_handle(viser_server)

    def set_content(self, content: str) -> None:
        self.content = content
        if self.gui_handle is not None:
            self.gui_handle.content = content  # type: ignore[union-attr]


class _ViewerLink(ViewerControl):
    """Receives the running viewer (nerfstudio calls ``_setup``); nothing else."""

    def __init__(self, on_setup: Callable[[object], None]) -> None:
        self._on_setup = on_setup

    def _setup(self, viewer) -> None:
        super()._setup(viewer)
        self._on_setup(viewer)


def thumbnail_markdown(image: torch.Tensor) -> str:
    """A markdown image (JPEG data URL) of ``[3, H, W]`` in [0, 1], ``THUMBNAIL_WIDTH`` wide."""
    from PIL import Image

    array = (image.detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
    picture = Image.fromarray(array)
    height = max(1, round(picture.height * THUMBNAIL_WIDTH / picture.width))
    buffer = io.BytesIO()
    picture.resize((THUMBNAIL_WIDTH, height)).save(buffer, format="JPEG", quality=80)
    return f"![source](data:image/jpeg;base64,{base64.b64encode(buffer.getvalue()).decode()})"


class SourceControls(nn.Module):
    """Viewer control of the source image (module docstring).

    Args:
        method: method name for texts.
        sizes: number of images per selectable split (``{"train": N, "test": M}``).
        names: file names per split (for the Active source text).
        catalogue: training cameras, for the nearest rule and the button.
        image_of: ``(split, index) -> [3, H, W]`` image in [0, 1] (thumbnail; called once per new source).
        camera_of: ``(split, index) -> (c2w [3, 4] OpenGL, vertical fov in radians)`` for "Go to source view".
        default_rule: initial Source rule.
        frustum_scale: frustum size in scene units the viewer starts with (nerfstudio's default is 0.01).
        default_index: initial Source index.
    """

    def __init__(
        self,
        method: str,
        sizes: Dict[str, int],
        names: Dict[str, List[str]],
        catalogue: SourceCatalogue,
        image_of: Callable[[str, int], torch.Tensor],
        camera_of: Callable[[str, int], tuple],
        default_rule: str = NEAREST,
        frustum_scale: float = 1.0,
        default_index: int = 0,
    ) -> None:
        super().__init__()
        assert default_rule in SOURCE_RULES, default_rule
        self.method, self.sizes, self.names = method, dict(sizes), names
        self.catalogue, self.image_of, self.camera_of = catalogue, image_of, camera_of
        self._viewer = None
        self._lock = threading.Lock()
        self._shown: Optional[tuple] = None
        self._last_pose: Optional[torch.Tensor] = None
        self._frustums_scaled = False
        self._highlight_handle = None
        self._hidden_frustums: List[int] = []
        # nerfstudio installs elements in dir() order (alphabetical), hence the s1..s8 prefixes.
        self.s1_rule = ViewerDropdown("Source rule", default_rule, list(SOURCE_RULES), hint="What conditions renders")
        self.s2_split = ViewerDropdown("Source split", "train", [s for s, n in sizes.items() if n > 0])
        self.s3_index = ViewerNumber("Source index", int(default_index), hint="Index within the split (Fixed image)")
        self.s4_fix_nearest = ViewerButton("Fix nearest image", cb_hook=lambda _: self._fix_nearest())
        self.s5_go_to_source = ViewerButton("Go to source view", cb_hook=lambda _: self._go_to_source())
        self.s6_active = ViewerText("Active source", "none yet", disabled=True)
        self.s7_thumbnail = ViewerMarkdown("Source thumbnail", "")
        self.s8_frustum_scale = ViewerSlider(
            "Frustum scale",
            float(frustum_scale),
            0.01,
            10.0 * max(frustum_scale, 0.1),
            step=0.01,
            cb_hook=lambda element: self._rescale_frustums(float(element.value)),
            hint="Training-camera frustum size, scene units",
        )
        self.viewer_link = _ViewerLink(self._attach)
        self._current: Optional[SourceChoice] = None

    # -------------------------------------------------------------------------------------------- state
    @property
    def in_viewer(self) -> bool:
        """True once nerfstudio's viewer installed the elements (never in ns-render or ns-eval)."""
        return self.s1_rule.gui_handle is not None

    def _attach(self, viewer) -> None:
        self._viewer = viewer

    def request(self, camera_to_world: torch.Tensor) -> Optional[SourceRequest]:
        """The viewer's request for a render from ``camera_to_world`` (None: use the nearest image)."""
        self._last_pose = camera_to_world.detach().reshape(-1, 4)[:3].cpu()
        self._scale_frustums_once()
        rule = self.s1_rule.value
        if rule == FIXED:
            split = str(self.s2_split.value)
            index = int(self.s3_index.value)
            size = self.sizes.get(split, 0)
            if not 0 <= index < size:
                self.s6_active.value = f"Source index {index} does not exist: {split} has {size} images (0..{size - 1})"
                index = min(max(index, 0), size - 1)
            return SourceRequest(split, index, "viewer: Fixed image")
        if rule == CLICKED:
            index = int(getattr(self._viewer, "current_camera_idx", 0))
            return SourceRequest("train", index, "viewer: clicked camera frustum")
        return None

    def show(self, choice: SourceChoice) -> None:
        """Show ``choice`` as the active source (text, thumbnail, highlighted frustum) when it changed."""
        if not self.in_viewer:
            return
        key = (choice.split, choice.index, choice.rule)
        with self._lock:
            if key == self._shown:
                return
            self._shown = key
        self._current = choice
        self._restore_hidden_frustum()
        names = self.names.get(choice.split, [])
        name = names[choice.index] if 0 <= choice.index < len(names) else ""
        self.s6_active.value = f"{choice.split} #{choice.index}  {name}  ({choice.rule.value})"
        try:
            image = self.image_of(choice.split, choice.index)
            self.s7_thumbnail.set_content(f"{thumbnail_markdown(image)}\n\n`{choice.split} #{choice.index}` {name}")
            self._highlight(choice, image)
        except Exception as error:  # a thumbnail must never break rendering
            self.s7_thumbnail.set_content(f"(no thumbnail: {type(error).__name__})")

    # ------------------------------------------------------------------------------------------ buttons
    def _fix_nearest(self) -> None:
        if self._last_pose is None:
            return
        self.s2_split.value = "train"
        self.s3_index.value = self.catalogue.nearest(self._last_pose)
        self.s1_rule.value = FIXED

    def _go_to_source(self) -> None:
        viewer = self._viewer
        choice = self._current
        if viewer is None or choice is None:
            return
        c2w, fov = self.camera_of(choice.split, choice.index)
        import viser.transforms as vtf

        # Frustum lines are as thick as the frustum is large; seen from their apex they would cover the picture.
        if self._highlight_handle is not None:
            self._highlight_handle.visible = False
        rotation = vtf.SO3.from_matrix(np.asarray(c2w[:3, :3], dtype=np.float64)) @ vtf.SO3.from_x_radians(np.pi)
        position = np.asarray(c2w[:3, 3], dtype=np.float64) * VISER_SCALE
        reach = 2.0 * float(self.s8_frustum_scale.value) * VISER_SCALE  # rigs put several cameras within a metre
        handles = getattr(viewer, "camera_handles", {}) or {}
        for index, handle in handles.items():
            if handle.visible and np.linalg.norm(np.asarray(handle.position) - position) < reach:
                handle.visible = False
                self._hidden_frustums.append(index)
        for client in viewer.viser_server.get_clients().values():
            with client.atomic():
                # viser keeps an up direction and derives the roll from it; the source's own up keeps its roll.
                client.camera.up_direction = np.asarray(c2w[:3, 1], dtype=np.float64)
                client.camera.wxyz = rotation.wxyz
                client.camera.position = position
                client.camera.fov = float(fov)

    # ----------------------------------------------------------------------------------------- frustums
    def _highlight(self, choice: SourceChoice, image: torch.Tensor) -> None:  # image: for its aspect
        """Draw the active source's camera as a large orange frustum (nerfstudio's are small and alike)."""
        viewer = self._viewer
        if viewer is None:
            return
        import viser.transforms as vtf

        c2w, fov = self.camera_of(choice.split, choice.index)
        rotation = vtf.SO3.from_matrix(np.asarray(c2w[:3, :3], dtype=np.float64)) @ vtf.SO3.from_x_radians(np.pi)
        self._highlight_handle = viewer.viser_server.scene.add_camera_frustum(
            "/bts_active_source",
            fov=float(fov),
            aspect=float(image.shape[-1] / image.shape[-2]),
            scale=float(self.s8_frustum_scale.value) * VISER_SCALE * 1.5,
            color=(255, 120, 0),  # no image on it: seen from the source view it would cover the render
            wxyz=rotation.wxyz,
            position=np.asarray(c2w[:3, 3], dtype=np.float64) * VISER_SCALE,
        )

    def _restore_hidden_frustum(self) -> None:
        handles = getattr(self._viewer, "camera_handles", {}) or {}
        for index in self._hidden_frustums:
            if index in handles:
                handles[index].visible = True
        self._hidden_frustums = []

    def _scale_frustums_once(self) -> None:
        """Apply the method's frustum scale when the viewer runs with nerfstudio's default (ns-viewer)."""
        viewer = self._viewer
        if self._frustums_scaled or viewer is None or not getattr(viewer, "camera_handles", None):
            return
        self._frustums_scaled = True
        if abs(float(viewer.config.camera_frustum_scale) - NERFSTUDIO_FRUSTUM_SCALE) < 1e-9:
            self._rescale_frustums(float(self.s8_frustum_scale.value))
        else:
            self.s8_frustum_scale.value = float(viewer.config.camera_frustum_scale) / VISER_SCALE

    def _rescale_frustums(self, scale: float) -> None:
        """Re-draw nerfstudio's training frustums at ``scale`` scene units (viser cannot resize them in place)."""
        viewer = self._viewer
        handles = getattr(viewer, "camera_handles", None)
        if viewer is None or not handles:
            return
        dataset = viewer.pipeline.datamanager.train_dataset
        for index in list(handles):
            old = handles[index]
            camera = dataset.cameras[index]
            image = (dataset[index]["image"][..., :3] * 255).byte().permute(2, 0, 1)
            size = (100, max(1, 100 * image.shape[-1] // image.shape[-2]))  # nerfstudio's thumbnails are 100 px high
            image = torch.nn.functional.interpolate(image[None].float(), size=size)[0]
            handle = viewer.viser_server.scene.add_camera_frustum(
                name=f"/cameras/camera_{index:05d}",
                fov=float(2 * np.arctan(float(camera.cx) / float(camera.fx[0]))),
                scale=scale * VISER_SCALE,
                aspect=float(camera.cx[0] / camera.cy[0]),
                image=image.byte().permute(1, 2, 0).numpy(),
                wxyz=old.wxyz,
                position=old.position,
            )

            def on_click(event, capture=index) -> None:
                with event.client.atomic():
                    event.client.camera.position = event.target.position
                    event.client.camera.wxyz = event.target.wxyz
                    viewer.current_camera_idx = capture

            handle.on_click(on_click)
            handles[index] = handle
