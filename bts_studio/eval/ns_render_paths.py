"""Camera paths of ``ns-render`` that fit image-conditioned street scenes and objects.

nerfstudio's ``ns-render`` builds its trajectories with three functions of ``nerfstudio.cameras.camera_paths``.
For our methods each loses something a user needs, so :func:`install` swaps in the versions below, in
``nerfstudio.scripts.render`` only and only when that module is running (our pipelines call it while ``ns-render``
loads the checkpoint; every other command is untouched):

- ``camera-path`` (:func:`path_cameras_from_json`): nerfstudio keeps the field of view but centres the principal
  point and drops any source. A ``bts-studio camera-path`` JSON stores the source (``"bts_source"``) and the source
  camera's intrinsics (``"bts_intrinsics"``), so frame 0 is exactly the source view and every frame is conditioned
  on that image (rule 'path source' of ``conditioning_rules.py``). Other JSONs render as nerfstudio renders them.
- ``interpolate`` (:func:`interpolated_cameras`): nerfstudio derives the image size from the principal point
  (``2 cx x 2 cy``: 310x122 for a 320x96 KITTI-360 camera whose cy is 61); the dataset cameras' size is kept.
- ``spiral`` (:func:`level_spiral`): nerfstudio's spiral uses the camera's own backward axis as "up" and a focus
  distance in pixels, so frames tilt 25-40 degrees, and its default radius (0.1) is 10 cm here. The spiral below
  circles in the start camera's level frame (world z up), looks at a point ``focus_distance`` ahead (objects: the
  world origin, their centre), keeps the start camera's intrinsics and image, and replaces the default 0.1 radius
  by the scene kind's (1.5 m for streets, 0.15 for unit objects); pass ``--radius`` to choose another.
"""

import math
import sys
from typing import Any, Dict, Optional, Tuple

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from bts_studio.methods.common.conditioning_rules import OWN_INDEX_KEY, OWN_SPLIT_KEY, SPLIT_NAMES, path_metadata

NERFSTUDIO_SPIRAL_RADIUS = 0.1
"""``ns-render spiral --radius`` default; left at it, the scene kind's radius is used."""
PATH_SCALES = {
    "street": {"spiral_radius": 1.5, "focus_distance": 15.0},
    "object": {"spiral_radius": 0.15, "focus_distance": 0.0},
}
"""Spiral radius and focus distance (scene units; 0 = look at the world origin) per scene kind."""
WORLD_UP = torch.tensor([0.0, 0.0, 1.0])
"""Every dataparser of ours writes a z-up world (docs/conventions.md)."""


def _log(message: str) -> None:
    from nerfstudio.utils.rich_utils import CONSOLE

    CONSOLE.print(message, highlight=False)


def path_cameras_from_json(camera_path: Dict[str, Any]) -> Cameras:
    """nerfstudio's ``get_path_from_json`` plus the source and intrinsics a ``bts-studio camera-path`` JSON stores.

    ``"bts_intrinsics"`` holds ``fx, fy, cx, cy`` in pixels of ``render_width x render_height``; ``"bts_source"``
    holds ``{"split": "train", "index": K}`` (``"bts_source_index": K`` is read too).
    """
    from nerfstudio.cameras.camera_paths import get_path_from_json

    cameras = get_path_from_json(camera_path)
    count = cameras.shape[0]
    intrinsics = camera_path.get("bts_intrinsics")
    if intrinsics is not None:
        missing = [key for key in ("fx", "fy", "cx", "cy") if key not in intrinsics]
        if missing:
            raise ValueError(f"camera path: 'bts_intrinsics' lacks {missing}; expected fx, fy, cx, cy in pixels")
        cameras = Cameras(
            camera_to_worlds=cameras.camera_to_worlds,
            fx=float(intrinsics["fx"]),
            fy=float(intrinsics["fy"]),
            cx=float(intrinsics["cx"]),
            cy=float(intrinsics["cy"]),
            width=int(camera_path["render_width"]),
            height=int(camera_path["render_height"]),
            camera_type=cameras.camera_type,
            times=cameras.times,
        )
    source = camera_path.get("bts_source")
    if source is None and "bts_source_index" in camera_path:
        source = {"split": "train", "index": camera_path["bts_source_index"]}
    if source is not None:
        cameras.metadata = path_metadata(str(source.get("split", "train")), int(source["index"]), count)
        _log(
            f"camera path: every frame is conditioned on its stored source, {source.get('split', 'train')} image "
            f"{int(source['index'])} (--camera-idx overrides it)"
        )
    return cameras


def interpolated_cameras(cameras: Cameras, steps: int, order_poses: bool) -> Cameras:
    """nerfstudio's ``get_interpolated_camera_path`` with the dataset cameras' image size kept."""
    from nerfstudio.cameras.camera_paths import get_interpolated_camera_path

    path = get_interpolated_camera_path(cameras=cameras, steps=steps, order_poses=order_poses)
    return Cameras(
        camera_to_worlds=path.camera_to_worlds,
        fx=path.fx,
        fy=path.fy,
        cx=path.cx,
        cy=path.cy,
        width=int(cameras.width.reshape(-1)[0]),
        height=int(cameras.height.reshape(-1)[0]),
        camera_type=path.camera_type,
    )


def level_frame(camera_to_world: Float[Tensor, "3 4"]) -> Tuple[Tensor, Tensor, Tensor]:
    """Unit right, up (world z) and forward directions of a camera's level frame (its heading, no tilt)."""
    c2w = camera_to_world.double()
    up = WORLD_UP.to(c2w)
    forward = -c2w[:, 2]
    forward = forward - (forward @ up) * up
    if forward.norm() < 1e-6:  # looking straight up or down: use the camera's own up axis for the heading
        forward = c2w[:, 1] - (c2w[:, 1] @ up) * up
    forward = forward / forward.norm()
    right = torch.linalg.cross(forward, up)
    return right, up, forward


def look_at(position: Tensor, target: Tensor, up: Tensor) -> Float[Tensor, "3 4"]:
    """OpenGL camera-to-world at ``position`` looking at ``target``, no roll about world ``up``."""
    backward = position - target
    backward = backward / backward.norm()
    right = torch.linalg.cross(up, backward)
    right = right / right.norm()
    camera_up = torch.linalg.cross(backward, right)
    return torch.stack([right, camera_up, backward, position], dim=1)


def level_spiral(
    camera: Cameras, steps: int, radius: float, focus_distance: float, rots: int = 2, zrate: float = 0.5
) -> Cameras:
    """A spiral around one camera in its level frame (module docstring); frames keep its intrinsics and size.

    Frame ``k`` (angle ``theta = 2 pi rots k / steps``) sits at ``radius * (sin theta, 1 - cos theta)`` right and up
    of the start and ``radius * sin(zrate theta)`` forward, so frame 0 is the start position, and looks at the
    point ``focus_distance`` ahead along the level heading (``0``: at the world origin).
    """
    assert camera.shape[0] == 1 if camera.shape else True, "level_spiral takes one camera"
    start = camera.camera_to_worlds.reshape(-1, 3, 4)[0].double().cpu()
    right, up, forward = level_frame(start)
    position0 = start[:, 3]
    target = position0 + focus_distance * forward if focus_distance > 0 else torch.zeros(3, dtype=torch.float64)
    poses = []
    for theta in torch.linspace(0.0, 2.0 * math.pi * rots, steps + 1, dtype=torch.float64)[:-1]:
        offset = radius * (torch.sin(theta) * right + (1 - torch.cos(theta)) * up + torch.sin(zrate * theta) * forward)
        poses.append(look_at(position0 + offset, target, up))
    c2ws = torch.stack(poses).float()
    return Cameras(
        camera_to_worlds=c2ws,
        fx=camera.fx.reshape(-1)[0].cpu(),
        fy=camera.fy.reshape(-1)[0].cpu(),
        cx=camera.cx.reshape(-1)[0].cpu(),
        cy=camera.cy.reshape(-1)[0].cpu(),
        width=int(camera.width.reshape(-1)[0]),
        height=int(camera.height.reshape(-1)[0]),
    )


def spiral_for(kind: str, carried_keys: Tuple[str, ...] = ()):
    """``get_spiral_path`` replacement for ``ns-render spiral`` on a scene of ``kind`` (street or object).

    ``carried_keys``: camera metadata of the start camera copied to every frame when it names no own image
    (``dvr``'s ``instance_idx`` / ``dvr_split``, so that every frame shows the start camera's object).
    """
    scales = PATH_SCALES[kind]

    def spiral(
        camera: Cameras,
        steps: int = 30,
        radius: Optional[float] = None,
        radiuses: Optional[Tuple[float]] = None,
        rots: int = 2,
        zrate: float = 0.5,
    ) -> Cameras:
        if radiuses is not None:
            raise ValueError("ns-render spiral: per-axis radiuses are not supported by bts-studio's level spiral")
        if radius is None or abs(radius - NERFSTUDIO_SPIRAL_RADIUS) < 1e-12:
            radius = scales["spiral_radius"]
            _log(f"ns-render spiral: radius {radius} scene units ({kind} default; --radius sets another)")
        path = level_spiral(camera, steps, float(radius), scales["focus_distance"], rots, zrate)
        metadata = camera.metadata or {}
        if OWN_SPLIT_KEY in metadata and OWN_INDEX_KEY in metadata:
            split = SPLIT_NAMES[int(torch.as_tensor(metadata[OWN_SPLIT_KEY]).reshape(-1)[0])]
            path.metadata = path_metadata(split, int(torch.as_tensor(metadata[OWN_INDEX_KEY]).reshape(-1)[0]), steps)
        elif carried_keys and all(key in metadata for key in carried_keys):
            path.metadata = {
                key: torch.as_tensor(metadata[key]).reshape(-1)[:1].cpu().expand(steps).reshape(steps, 1).clone()
                for key in carried_keys
            }
        return path

    return spiral


def install(kind: str, carried_keys: Tuple[str, ...] = ()) -> bool:
    """Use these paths in a running ``ns-render`` (no-op elsewhere); returns whether anything was installed.

    ``carried_keys``: see :func:`spiral_for`."""
    render = sys.modules.get("nerfstudio.scripts.render")
    if render is None:
        return False
    render.get_path_from_json = path_cameras_from_json  # type: ignore[attr-defined]
    render.get_interpolated_camera_path = interpolated_cameras  # type: ignore[attr-defined]
    render.get_spiral_path = spiral_for(kind, carried_keys)  # type: ignore[attr-defined]
    return True
