"""Source views: the single input image a BTS render is conditioned on, and where the model finds it.

nerfstudio hands models only cameras or rays (viewer, ns-render, ns-eval). The pipeline therefore gives the model
a :class:`SourceBank` (the datamanager's datasets; never saved in checkpoints) and the model resolves which image
conditions a camera (``BTSModel.resolve_source``) with the rules of ``methods/common/conditioning_rules.py``: its own
dataset image (``bts_split`` / ``bts_image_index``, set by :class:`BTSDataManager` on every dataset camera), a
requested image (viewer control, ``ns-render --camera-idx``), the camera path's stored source, else the nearest
training image.
"""

from dataclasses import dataclass
from typing import Dict, Tuple

from jaxtyping import Float
from nerfstudio.data.datasets.base_dataset import InputDataset
from torch import Tensor

from bts_studio.core.geometry import invert_pose
from bts_studio.methods.bts.conditioning import BTSConditioning
from bts_studio.methods.common.cameras import cameras_to_opencv
from bts_studio.methods.common.conditioning_rules import SPLIT_IDS, SPLIT_NAMES  # noqa: F401  (re-exported)


@dataclass
class SourceView:
    """One encoded input image: everything needed to query the density field from it."""

    features: Float[Tensor, "C H W"]
    """Encoder features, pixel-aligned with ``image``."""
    image: Float[Tensor, "3 H W"]
    """The image in [0, 1]; rendered colours are read from it."""
    K: Float[Tensor, "3 3"]
    """Intrinsics in nerfstudio pixel units (docs/conventions.md, "Pixels")."""
    c2w: Float[Tensor, "4 4"]
    """Camera-to-world, OpenCV axes, nerfstudio world (metres for KITTI-360)."""
    height: int
    width: int

    @property
    def w2c(self) -> Float[Tensor, "4 4"]:
        return invert_pose(self.c2w)

    def as_conditioning(self) -> BTSConditioning:
        """Condition a render on this view, with colours read from its own image (BTS's evaluation setup)."""
        w2c = self.w2c[:3]
        return BTSConditioning(
            features=self.features[None],
            source_K=self.K[None],
            source_w2c=w2c[None],
            colour_images=self.image[None, None],
            colour_K=self.K[None, None],
            colour_w2c=w2c[None, None],
        )


class SourceBank:
    """Read-only access to the images and cameras of the datamanager's datasets, by split name."""

    def __init__(self, datasets: Dict[str, InputDataset]) -> None:
        self.datasets = {name: dataset for name, dataset in datasets.items() if dataset is not None}

    def __len__(self) -> int:
        return len(self.datasets)

    def size(self, split: str) -> int:
        return len(self.datasets[split]) if split in self.datasets else 0

    def view_inputs(
        self, split: str, index: int
    ) -> Tuple[Float[Tensor, "3 H W"], Float[Tensor, "3 3"], Float[Tensor, "4 4"]]:
        """Image ``[3, H, W]`` in [0, 1], pixel K and OpenCV c2w of image ``index`` of ``split`` (on the CPU)."""
        if split not in self.datasets:
            raise KeyError(f"bts-density: no {split!r} images loaded (have: {', '.join(self.datasets) or 'none'})")
        dataset = self.datasets[split]
        if not 0 <= index < len(dataset):
            raise IndexError(f"bts-density: source image {index} does not exist; the {split} split has {len(dataset)}")
        image = dataset.get_image_float32(index)[..., :3].permute(2, 0, 1).contiguous()
        K, c2w = cameras_to_opencv(dataset.cameras[index : index + 1].to("cpu"))
        height, width = int(dataset.cameras.height[index]), int(dataset.cameras.width[index])
        if tuple(image.shape[-2:]) != (height, width):
            raise ValueError(
                f"bts-density: image {dataset.image_filenames[index]} is {image.shape[-1]}x{image.shape[-2]} but its "
                f"camera says {width}x{height}"
            )
        return image, K[0], c2w[0]
