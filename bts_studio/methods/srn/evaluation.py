"""ns-eval's SRN protocol: few-shot reconstruction of test instances, and novel views of training instances.

Few-shot (per protocol ``k`` in ``FewShotConfig.shots``): every test instance gets a new latent code
fitted to its first ``k`` conditioning views (SRN: view 64; views 64 and 104) with the networks frozen
(``few_shot.py``); the code then renders **the other views** of the instance. The conditioning views are
excluded from the scores: pixelNeRF's protocol (SRN's own ``test.py`` keeps them, which inflates its
numbers slightly). The dataparser's ``exclude_input_views=False`` switches to SRN's choice.

Training instances: when the data manager holds out views of training instances
(``heldout_views_per_instance``), they are rendered with the trained codes and scored too.

Metrics are scikit-image's PSNR and SSIM on 8-bit ground truth and clipped predictions
(``bts_studio.core.image_quality``), averaged over all scored images of all instances (as SRN and
pixelNeRF average), with per-instance means in ``per_instance``.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image
from torch import Tensor

from bts_studio.core.image_quality import psnr, ssim
from bts_studio.methods.common.image_store import load_images
from bts_studio.methods.srn.datamanager import SRNDataManager, views_by_instance
from bts_studio.methods.srn.few_shot import FewShotConfig, InstanceRays, fit_latent_codes
from bts_studio.methods.srn.model import SRNModel

VIEWS_PER_RENDER = 16
"""Target views rendered per batch of rays."""


@dataclass
class InstanceTask:
    """What to do for one instance: condition on some images, score others (indices into a dataset)."""

    name: str
    instance: int
    input_images: List[int]
    target_images: List[int]
    target_views: List[int]


@dataclass
class ScoreBoard:
    """Per-image scores of one protocol, with the instance of each image."""

    psnr: List[float]
    ssim: List[float]
    instance_names: List[str]

    @classmethod
    def empty(cls) -> "ScoreBoard":
        return cls([], [], [])

    def add(self, name: str, psnrs: Tensor, ssims: Tensor) -> None:
        self.psnr += psnrs.tolist()
        self.ssim += ssims.tolist()
        self.instance_names += [name] * len(psnrs)

    def summary(self, prefix: str) -> Dict[str, float]:
        """Means and population standard deviations over images (no NaN for a single image)."""
        if not self.psnr:
            return {}
        out: Dict[str, float] = {}
        for key, values in (("psnr", self.psnr), ("ssim", self.ssim)):
            array = np.asarray(values, dtype=np.float64)
            out[f"{prefix}{key}"] = finite(array.mean())
            out[f"{prefix}{key}_std"] = finite(array.std())
        out[f"{prefix}num_images"] = len(self.psnr)
        return out

    def per_instance(self) -> Dict[str, Dict[str, float]]:
        table: Dict[str, Dict[str, float]] = {}
        names = np.asarray(self.instance_names)
        for name in dict.fromkeys(self.instance_names):
            mask = names == name
            table[name] = {
                "psnr": finite(np.asarray(self.psnr)[mask].mean()),
                "ssim": finite(np.asarray(self.ssim)[mask].mean()),
                "num_views": int(mask.sum()),
            }
        return table


def finite(value: float) -> Optional[float]:
    """A JSON-safe float: non-finite values become None (null) instead of a bare NaN."""
    value = float(value)
    return value if np.isfinite(value) else None


def score_images(
    prediction: Float[Tensor, "N H W 3"], target: Float[Tensor, "N H W 3"]
) -> Tuple[Float[Tensor, " N"], Float[Tensor, " N"]]:
    """Per-image PSNR and SSIM (scikit-image definitions); predictions are clipped to [0, 1]."""
    prediction = prediction.clamp(0.0, 1.0)
    return psnr(prediction, target).cpu(), ssim(prediction, target).cpu()


def image_rays(cameras: Cameras, image_indices: Sequence[int]) -> Tuple[Tensor, Tensor, Tensor]:
    """Rays of whole images, row-major, concatenated: origins, unit directions, directions_norm ``[n*H*W, .]``."""
    pieces = []
    for index in image_indices:
        bundle = cameras.generate_rays(camera_indices=int(index), keep_shape=True)
        norm = bundle.metadata["directions_norm"]
        pieces.append((bundle.origins.reshape(-1, 3), bundle.directions.reshape(-1, 3), norm.reshape(-1, 1)))
    return tuple(torch.cat(parts) for parts in zip(*pieces, strict=True))  # type: ignore[return-value]


def render_images(
    model: SRNModel, cameras: Cameras, image_indices: Sequence[int], code: Optional[Tensor]
) -> Float[Tensor, "N H W 3"]:
    """Render whole images of one instance (given its code) with the model; ``[N, H, W, 3]`` in [0, 1]."""
    height, width = int(cameras.height[image_indices[0]]), int(cameras.width[image_indices[0]])
    images = []
    with torch.no_grad():
        for start in range(0, len(image_indices), VIEWS_PER_RENDER):
            chunk = image_indices[start : start + VIEWS_PER_RENDER]
            origins, directions, norms = image_rays(cameras, chunk)
            rgb = model.render_rays_with_code(origins, directions, norms, code)["rgb"]
            images.append(rgb.reshape(len(chunk), height, width, 3))
    return torch.cat(images)


def few_shot_tasks(datamanager: SRNDataManager, config: FewShotConfig, shots: int) -> List[InstanceTask]:
    """Conditioning and scored images of every test instance for the ``shots``-view protocol."""
    dataset = datamanager.eval_dataset
    metadata = dataset.metadata
    input_views = resolve_input_views(datamanager, config)
    if shots < 1 or shots > len(input_views):
        raise ValueError(f"a {shots}-shot protocol needs {shots} conditioning views; input_views is {input_views}")
    chosen = input_views[:shots]
    exclude = bool(metadata.get("exclude_input_views", True))
    names = list(metadata.get("instance_names", []))
    table = views_by_instance(dataset.cameras, "test_instance_idx")
    instances = list(table.items())
    if config.max_instances >= 0:
        instances = instances[: config.max_instances]
    tasks = []
    for instance, entries in instances:
        name = names[instance] if instance < len(names) else f"instance_{instance:05d}"
        by_view = dict(entries)
        missing = [view for view in chosen if view not in by_view]
        if missing:
            raise ValueError(
                f"test instance {name} has no view(s) {missing} to condition on (it has {len(entries)} views); "
                "set --pipeline.few-shot.input-views"
            )
        targets = [(view, image) for view, image in entries if not (exclude and view in chosen)]
        targets = targets[:: max(config.view_stride, 1)]
        inputs = [by_view[view] for view in chosen]
        tasks.append(InstanceTask(name, instance, inputs, [i for _, i in targets], [v for v, _ in targets]))
    return tasks


def resolve_input_views(datamanager: SRNDataManager, config: FewShotConfig) -> Tuple[int, ...]:
    """Conditioning views in order: the config's, else the dataparser's ``few_shot_views``."""
    return tuple(config.input_views) or tuple(datamanager.eval_dataset.metadata.get("few_shot_views", ()))


def heldout_tasks(datamanager: SRNDataManager) -> List[InstanceTask]:
    """Held-out views of training instances (indices into the training dataset), per instance."""
    heldout = set(getattr(datamanager, "heldout_image_indices", []))
    if not heldout:
        return []
    names = list(datamanager.train_dataset.metadata.get("instance_names", []))
    tasks = []
    for instance, entries in views_by_instance(datamanager.train_dataset.cameras, "instance_idx").items():
        targets = [(view, image) for view, image in entries if image in heldout]
        inputs = [image for _, image in entries if image not in heldout]
        name = names[instance] if instance < len(names) else f"instance_{instance:05d}"
        tasks.append(InstanceTask(name, instance, inputs, [i for _, i in targets], [v for v, _ in targets]))
    return tasks


def conditioning_rays(datamanager: SRNDataManager, tasks: List[InstanceTask], device: torch.device) -> InstanceRays:
    """All pixels of the conditioning images of each task, stacked per instance."""
    dataset = datamanager.eval_dataset
    cameras = dataset.cameras.to(device)
    per_instance = []
    for task in tasks:
        colours = load_images(dataset, task.input_images, device).float().reshape(-1, 3) / 255.0
        per_instance.append((*image_rays(cameras, task.input_images), colours))
    origins, directions, norms, colours = (torch.stack(parts) for parts in zip(*per_instance, strict=True))
    return InstanceRays(origins, directions, norms, colours)


class Stopwatch:
    """Wall time of rendering calls (synchronising CUDA so the numbers mean something)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = 0.0
        self.images = 0
        self.pixels = 0

    def time(self, render: Callable[[], Tensor]) -> Tensor:
        self._sync()
        start = time.perf_counter()
        images = render()
        self._sync()
        self.seconds += time.perf_counter() - start
        self.images += images.shape[0]
        self.pixels += images.shape[0] * images.shape[1] * images.shape[2]
        return images

    def _sync(self) -> None:
        if torch.device(self.device).type == "cuda":
            torch.cuda.synchronize(self.device)

    def summary(self) -> Dict[str, float]:
        if not self.images or self.seconds <= 0:
            return {}
        return {
            "seconds_per_image": self.seconds / self.images,
            "fps": self.images / self.seconds,
            "num_rays_per_sec": self.pixels / self.seconds,
        }


def save_comparisons(
    output_path: Optional[Path], tag: str, task: InstanceTask, predictions: Tensor, targets: Tensor, count: int
) -> None:
    """Write ``ground truth | prediction`` PNGs of the first ``count`` scored views."""
    if output_path is None or count <= 0:
        return
    output_path.mkdir(parents=True, exist_ok=True)
    for view, prediction, target in list(zip(task.target_views, predictions, targets, strict=True))[:count]:
        pair = torch.cat([target, prediction.clamp(0, 1)], dim=1)
        array = (pair.cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
        Image.fromarray(array).save(output_path / f"{tag}_{task.name}_view{view:03d}.png")


def evaluate_srn(
    datamanager: SRNDataManager,
    model: SRNModel,
    config: FewShotConfig,
    output_path: Optional[Path] = None,
    scalars_only: bool = False,
) -> Dict:
    """Run the protocol (module docstring) and return ns-eval's ``results`` dictionary (JSON-safe)."""
    device = model.device
    results: Dict = {}
    per_instance: Dict[str, Dict] = {}
    stopwatch = Stopwatch(device)
    protocol = {"metric": "scikit-image PSNR/SSIM, prediction clipped to [0, 1], mean over scored images"}
    if model.config.single_scene:
        CONSOLE.print("[yellow]srn single-scene model: no few-shot protocol; scoring held-out views only")
        shots_list: Tuple[int, ...] = ()
    else:
        shots_list = tuple(config.shots)
    eval_cameras = datamanager.eval_dataset.cameras.to(device)
    for shots in shots_list:
        tag = f"{shots}shot"
        tasks = few_shot_tasks(datamanager, config, shots)
        board = ScoreBoard.empty()
        first_losses, last_losses = [], []
        for start in range(0, len(tasks), config.instances_per_batch):
            batch = tasks[start : start + config.instances_per_batch]
            rays = conditioning_rays(datamanager, batch, device)
            label = f"{tag}: fitting codes of test instances {start + 1}-{start + len(batch)} of {len(tasks)}"
            codes, losses = fit_latent_codes(model, rays, config, description=label)
            first_losses.append(losses[0] if losses else float("nan"))
            last_losses.append(losses[-1] if losses else float("nan"))
            for task, code in zip(batch, codes, strict=True):
                if not task.target_images:
                    continue
                targets = load_images(datamanager.eval_dataset, task.target_images, device).float() / 255.0
                predictions = stopwatch.time(
                    lambda task=task, code=code: render_images(model, eval_cameras, task.target_images, code[None])
                )
                board.add(task.name, *score_images(predictions, targets))
                save_comparisons(output_path, tag, task, predictions, targets, config.saved_views_per_instance)
        results.update(board.summary(f"{tag}_"))
        results[f"{tag}_fit_loss_first"] = finite(np.mean(first_losses)) if first_losses else None
        results[f"{tag}_fit_loss_last"] = finite(np.mean(last_losses)) if last_losses else None
        per_instance[tag] = board.per_instance()
        scored = "the other views (inputs excluded, pixelNeRF)" if _excludes(datamanager) else "all views (SRN)"
        protocol[tag] = (
            f"new codes fitted to view(s) {list(resolve_input_views(datamanager, config)[:shots])} for "
            f"{config.num_steps} steps (Adam, lr {config.learning_rate}), networks frozen; scored on {scored}"
        )

    heldout = heldout_tasks(datamanager)
    if heldout:
        board = ScoreBoard.empty()
        train_cameras = datamanager.train_dataset.cameras.to(device)
        for task in heldout:
            targets = datamanager.image_cache[task.target_images].to(device).float() / 255.0
            code = model.latent_code_for_instance(task.instance)
            predictions = stopwatch.time(
                lambda task=task, code=code: render_images(model, train_cameras, task.target_images, code)
            )
            board.add(task.name, *score_images(predictions, targets))
            save_comparisons(output_path, "train_heldout", task, predictions, targets, config.saved_views_per_instance)
        results.update(board.summary("train_heldout_"))
        per_instance["train_heldout"] = board.per_instance()
        protocol["train_heldout"] = "held-out views of training instances, rendered with their trained codes"

    headline = f"{shots_list[0]}shot_" if shots_list else "train_heldout_"
    for key in ("psnr", "ssim"):
        if f"{headline}{key}" in results:
            results[key] = results[f"{headline}{key}"]
    results.update(stopwatch.summary())
    if scalars_only:
        return {key: value for key, value in results.items() if isinstance(value, (int, float))}
    results["per_instance"] = per_instance
    results["protocol"] = protocol
    json.dumps(results, allow_nan=False)  # fail here, not in ns-eval, if anything non-finite slipped through
    return results


def _excludes(datamanager: SRNDataManager) -> bool:
    return bool(datamanager.eval_dataset.metadata.get("exclude_input_views", True))
