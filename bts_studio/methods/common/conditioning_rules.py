"""Which dataset image conditions a render: one set of rules for the viewer, ns-render and ns-eval.

Image-conditioned methods (bts-density's input image, srn's instance code looked up through a training image, dvr
and deepvoxels later) render nothing useful without a source. nerfstudio hands a model only a camera, so the source
is read from the camera's metadata and, when nothing names it, found by position. The rules, first match wins:

1. **own image** — the camera belongs to a dataset (``ns-eval``, ``ns-render dataset``, eval images while training):
   its metadata names its split and index (``OWN_SPLIT_KEY`` / ``OWN_INDEX_KEY``), so it is rendered from itself.
2. **requested** — the user named a source: the viewer's source control, or ``ns-render --camera-idx K``
   (nerfstudio puts ``{"cam_idx": K}`` into the metadata).
3. **path source** — the camera belongs to a path that stores its source (``bts-studio camera-path`` writes
   ``"bts_source"`` into the JSON; ``ns-render spiral`` starts at a dataset image): ``PATH_SPLIT_KEY`` /
   ``PATH_INDEX_KEY``.
4. **nearest** — the training image whose camera is nearest by position and viewing direction
   (:meth:`SourceCatalogue.nearest`), never a fixed image far away.

A method that cannot use rule 4 (srn: an instance code, not a view; the nearest view of another object would swap
the object) passes ``nearest=False`` and gets **default** with the index it names; either way the choice is logged.
"""

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

OWN_SPLIT_KEY = "bts_split"
"""Camera metadata: split code (``SPLIT_IDS``) of the dataset image a camera belongs to."""
OWN_INDEX_KEY = "bts_image_index"
"""Camera metadata: index of that image in its split."""
PATH_SPLIT_KEY = "path_source_split"
"""Camera metadata: split code of the source a camera path stores."""
PATH_INDEX_KEY = "path_source_index"
"""Camera metadata: index of that source image."""
CAM_IDX_KEY = "cam_idx"
"""nerfstudio's key: the viewer's last clicked training frustum, or ``ns-render --camera-idx``."""

SPLIT_IDS = {"train": 0, "test": 1}
"""Integer codes of dataset splits in camera metadata (metadata values must be tensors)."""
SPLIT_NAMES = {code: name for name, code in SPLIT_IDS.items()}


class SourceRule(str, Enum):
    """The rule that chose a source (module docstring)."""

    OWN_IMAGE = "own image"
    REQUESTED = "requested"
    PATH_SOURCE = "path source"
    NEAREST = "nearest training image"
    DEFAULT = "default"


@dataclass(frozen=True)
class SourceRequest:
    """A source the user named (viewer control, ``--camera-idx``) and where the request came from."""

    split: str
    index: int
    origin: str
    """Shown in the log, e.g. ``"ns-render --camera-idx"`` or ``"viewer: fixed image"``."""


@dataclass(frozen=True)
class SourceChoice:
    """The image that conditions one render and why it was chosen."""

    split: str
    index: int
    rule: SourceRule
    detail: str = ""
    """Extra words for the log (who requested it, the distance of the nearest image, ...)."""

    def describe(self, name: str = "") -> str:
        named = f" ({name})" if name else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.split} image {self.index}{named}, rule '{self.rule.value}'{detail}"


def metadata_int(metadata: Optional[Dict], key: str) -> Optional[int]:
    """The first value of ``metadata[key]`` (tensor, number or None) as an int; None when absent."""
    if not metadata or metadata.get(key) is None:
        return None
    return int(torch.as_tensor(metadata[key]).reshape(-1)[0])


def own_image(metadata: Optional[Dict]) -> Optional[SourceRequest]:
    """Rule 1: the dataset image a camera belongs to, from ``OWN_SPLIT_KEY`` / ``OWN_INDEX_KEY``."""
    split, index = metadata_int(metadata, OWN_SPLIT_KEY), metadata_int(metadata, OWN_INDEX_KEY)
    if split is None or index is None:
        return None
    return SourceRequest(SPLIT_NAMES[split], index, "the camera's own dataset image")


def path_source(metadata: Optional[Dict]) -> Optional[SourceRequest]:
    """Rule 3: the source a camera path stores, from ``PATH_SPLIT_KEY`` / ``PATH_INDEX_KEY``."""
    split, index = metadata_int(metadata, PATH_SPLIT_KEY), metadata_int(metadata, PATH_INDEX_KEY)
    if index is None:
        return None
    return SourceRequest(SPLIT_NAMES[split or 0], index, "stored in the camera path")


def camera_idx_request(metadata: Optional[Dict]) -> Optional[SourceRequest]:
    """Rule 2 outside the viewer: ``{"cam_idx": K}`` is ``ns-render --camera-idx K`` (a training image)."""
    index = metadata_int(metadata, CAM_IDX_KEY)
    return None if index is None else SourceRequest("train", index, "ns-render --camera-idx")


def path_metadata(split: str, index: int, count: int) -> Dict[str, Tensor]:
    """Metadata that makes every camera of a ``count``-camera path use ``split`` image ``index`` (rule 3)."""
    return {
        PATH_SPLIT_KEY: torch.full((count, 1), SPLIT_IDS[split], dtype=torch.long),
        PATH_INDEX_KEY: torch.full((count, 1), int(index), dtype=torch.long),
    }


@dataclass
class SourceCatalogue:
    """Positions and viewing directions of the training cameras, for the nearest-image rule.

    The score of image ``i`` for a camera at ``p`` looking along ``d`` is
    ``|p - p_i| + direction_weight * (1 - d . d_i)``: position in scene units, plus a penalty that grows with the
    angle between the views (``2 * direction_weight`` for opposite views), so that an image looking the other way
    loses to one a little farther away that sees what the camera sees.
    """

    positions: Float[Tensor, "N 3"]
    directions: Float[Tensor, "N 3"]
    """Unit viewing directions (OpenGL ``-z`` column of camera-to-world)."""
    direction_weight: float = 10.0
    """Scene units one unit of ``1 - cos(angle)`` costs (streets: 10 m, so a 90 degree turn costs 10 m)."""

    def __post_init__(self) -> None:
        assert self.positions.ndim == 2 and self.positions.shape[-1] == 3, f"positions {tuple(self.positions.shape)}"
        assert self.directions.shape == self.positions.shape, f"directions {tuple(self.directions.shape)}"

    @classmethod
    def from_camera_to_worlds(
        cls, camera_to_worlds: Float[Tensor, "N 3 4"], direction_weight: float = 10.0
    ) -> "SourceCatalogue":
        c2w = camera_to_worlds.detach().float().cpu()
        return cls(c2w[:, :3, 3], -c2w[:, :3, 2] / c2w[:, :3, 2].norm(dim=-1, keepdim=True), direction_weight)

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    def scores(self, camera_to_world: Float[Tensor, "3 4"]) -> Float[Tensor, " N"]:
        c2w = camera_to_world.detach().float().cpu().reshape(-1, 4)[:3]
        direction = -c2w[:, 2] / c2w[:, 2].norm()
        distance = (self.positions - c2w[:, 3]).norm(dim=-1)
        return distance + self.direction_weight * (1.0 - self.directions @ direction)

    def nearest(self, camera_to_world: Float[Tensor, "3 4"]) -> int:
        """Index of the training image nearest to an OpenGL camera-to-world ``[3, 4]`` (lowest score)."""
        if len(self) == 0:
            raise ValueError("no training cameras to choose a source from")
        return int(torch.argmin(self.scores(camera_to_world)))


def choose_source(
    metadata: Optional[Dict],
    camera_to_world: Optional[Float[Tensor, "3 4"]],
    catalogue: Optional[SourceCatalogue],
    request: Optional[SourceRequest] = None,
    nearest: bool = True,
    default_index: int = 0,
) -> SourceChoice:
    """Apply the rules (module docstring) to one camera.

    Args:
        metadata: the camera's metadata (``Cameras.metadata``; per-camera tensors or plain ints).
        camera_to_world: its OpenGL camera-to-world ``[3, 4]`` (nerfstudio world).
        catalogue: the training cameras (only rule 4 reads it and ``camera_to_world``).
        request: rule 2, when the caller knows of one (the viewer's control); None reads ``cam_idx`` as
            ``ns-render --camera-idx``.
        nearest: rule 4 allowed; otherwise ``default_index`` of the train split (rule 'default').
    """
    own = own_image(metadata)
    if own is not None:
        return SourceChoice(own.split, own.index, SourceRule.OWN_IMAGE)
    request = request or camera_idx_request(metadata)
    if request is not None:
        return SourceChoice(request.split, request.index, SourceRule.REQUESTED, request.origin)
    stored = path_source(metadata)
    if stored is not None:
        return SourceChoice(stored.split, stored.index, SourceRule.PATH_SOURCE, stored.origin)
    if not nearest:
        return SourceChoice("train", default_index, SourceRule.DEFAULT, "no source named; the config's default")
    if catalogue is None or camera_to_world is None:
        raise ValueError("the nearest-image rule needs the training cameras and the camera pose")
    index = catalogue.nearest(camera_to_world)
    score = float(catalogue.scores(camera_to_world)[index])
    return SourceChoice("train", index, SourceRule.NEAREST, f"score {score:.2f} (distance + direction penalty)")


def check_index(choice: SourceChoice, sizes: Dict[str, int]) -> None:
    """A clear error when a chosen source does not exist (e.g. ``--camera-idx`` past the end)."""
    size = sizes.get(choice.split, 0)
    if not 0 <= choice.index < size:
        raise IndexError(
            f"source {choice.describe()} does not exist: the {choice.split} split has {size} images "
            f"(valid: 0..{size - 1})"
        )


class ChoiceLog:
    """Prints a source choice when it differs from the previous one (renders come in long runs of one source)."""

    def __init__(self, method: str, printer: Optional[Callable[[str], None]] = None) -> None:
        self.method = method
        self.last: Optional[SourceChoice] = None
        self.printer = printer
        self.history: List[SourceChoice] = []
        """Every logged choice (tests read it)."""

    def __call__(self, choice: SourceChoice, name: str = "") -> None:
        if self.last is not None and (self.last.split, self.last.index, self.last.rule) == (
            choice.split,
            choice.index,
            choice.rule,
        ):
            return
        self.last = choice
        self.history.append(choice)
        message = f"{self.method}: conditioning on {choice.describe(name)}"
        if self.printer is not None:
            self.printer(message)
        else:
            from nerfstudio.utils.rich_utils import CONSOLE

            CONSOLE.print(message, highlight=False)


def image_names(filenames: Sequence, count: int) -> List[str]:
    """Short names (file names) of a split's images, for logs and the viewer."""
    # "<folder>/<file>" two levels up: KITTI-360's camera (image_00/.../0000000004.png), an SRN instance id.
    names = [f"{Path(f).parent.parent.name}/{Path(f).name}" for f in filenames]
    return names if len(names) == count else [f"#{i}" for i in range(count)]
