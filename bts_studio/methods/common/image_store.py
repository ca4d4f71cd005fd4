"""Image stores: dataset images kept as uint8 so that batches are drawn without decoding files every step.

``load_images``: images of a dataset as one uint8 tensor (SRN's training cache and few-shot evaluation).

``GroupImageStore``: the images of BTS frame groups, from a uint8 cache (GPU or RAM) or PNG decoding in workers.

A training step needs the 8 images of each of 16 frame groups (128 images at 192x640). Decoding that many PNGs in
the main process would starve the GPU, so the store either keeps every image as one uint8 tensor (``cache``;
chosen automatically when it fits) or decodes the groups of the next batches in DataLoader workers (``disk``).
Both return ``uint8 [B, 8, H, W, 3]`` with zeros where a group lacks a frame (index -1). Which groups a step gets
is a :class:`~bts_studio.methods.common.distributed.ShardedOrder` (epoch-wise shuffling, sharded across DDP ranks).
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, List, Literal, Optional, Sequence, Tuple

import torch
from jaxtyping import Int, UInt8
from nerfstudio.data.datasets.base_dataset import InputDataset
from rich.progress import Progress, track
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from bts_studio.methods.common.distributed import ShardedOrder

__all__ = ["GroupImageStore", "ImageCacheMode", "load_images", "read_png_uint8"]

ImageCacheMode = Literal["auto", "device", "cpu", "disk"]


def load_images(
    dataset: InputDataset, indices: Sequence[int], device: torch.device | str = "cpu", description: str = ""
) -> UInt8[Tensor, "N H W 3"]:
    """Read images of a dataset as one uint8 tensor (alpha composited on the dataparser's colour, dropped).

    Raises:
        ValueError: when the images do not all have the same size.
    """
    indices = list(indices)

    def read(index: int) -> Tensor:
        return dataset.get_image_uint8(index)[..., :3]

    with ThreadPoolExecutor(max_workers=8) as pool:
        iterator = pool.map(read, indices)
        if description and len(indices) > 64:
            iterator = track(iterator, total=len(indices), description=description, transient=True)
        images = list(iterator)
    if not images:
        return torch.zeros(0, 0, 0, 3, dtype=torch.uint8, device=device)
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) > 1:
        raise ValueError(f"need images of one size; found sizes {sorted(sizes)} (use --image-size to resize)")
    return torch.stack(images).to(device)


def read_png_uint8(path: Path, height: int, width: int) -> UInt8[Tensor, "H W 3"]:
    """Decode an image file to ``uint8 [H, W, 3]``; a clear error names the file when it is missing or wrong."""
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except Exception as error:
        raise ValueError(
            f"bts-density: cannot read image {path} ({type(error).__name__}: {error}); "
            "if it is a cached copy, delete it and run again (the dataparser re-makes cached files that fail to "
            "verify); otherwise check the download"
        ) from error
    if tuple(image.shape[-2:]) != (height, width):
        raise ValueError(f"bts-density: image {path} is {image.shape[-1]}x{image.shape[-2]}, expected {width}x{height}")
    return image.permute(1, 2, 0).contiguous()


class _GroupDataset(Dataset):
    """Dataset of frame groups; item ``g`` is ``(g, uint8 [8, H, W, 3])``."""

    def __init__(self, filenames: Sequence[Path], groups: Int[Tensor, "G 8"], height: int, width: int) -> None:
        self.filenames = [Path(f) for f in filenames]
        self.groups = groups
        self.height, self.width = height, width

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> Tuple[int, Tensor]:
        frames = []
        for image_index in self.groups[index].tolist():
            if image_index < 0:
                frames.append(torch.zeros(self.height, self.width, 3, dtype=torch.uint8))
            else:
                frames.append(read_png_uint8(self.filenames[image_index], self.height, self.width))
        return index, torch.stack(frames)


class GroupImageStore:
    """Draws random batches of frame groups and returns their images on ``device``.

    Args:
        filenames: image paths of the split (index = image index).
        groups: ``[G, 8]`` image indices of the usable frame groups (-1 = missing).
        height, width: image size.
        batch_size: groups per batch.
        device: where the images are returned.
        mode: ``device`` / ``cpu`` keep all images as uint8 in GPU / host memory, ``disk`` decodes per batch in
            ``num_workers`` processes, ``auto`` picks the first that fits ``device_limit_gib`` / ``cpu_limit_gib``.
        seed: seed of the group order when ``order`` is not given (None: drawn from torch's global generator).
        order: which groups each step gets (DDP: this rank's shard); default one process, ``batch_size`` per step.
    """

    def __init__(
        self,
        filenames: Sequence[Path],
        groups: Int[Tensor, "G 8"],
        height: int,
        width: int,
        batch_size: int,
        device: torch.device | str,
        mode: ImageCacheMode = "auto",
        num_workers: int = 8,
        device_limit_gib: float = 8.0,
        cpu_limit_gib: float = 16.0,
        seed: Optional[int] = None,
        order: Optional[ShardedOrder] = None,
    ) -> None:
        assert groups.dim() == 2 and groups.shape[1] == 8 and len(groups) > 0, f"groups {tuple(groups.shape)}"
        self.filenames = [Path(f) for f in filenames]
        self.groups = groups.cpu()
        self.height, self.width = height, width
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.mode = self._choose_mode(mode, device_limit_gib, cpu_limit_gib)
        self.num_workers = num_workers
        if order is None:
            seed = int(torch.randint(0, 2**62, ()).item()) if seed is None else seed
            order = ShardedOrder(len(self.groups), batch_size, seed)
        if order.num_items != len(self.groups) or order.batch_size != batch_size:
            raise ValueError(
                f"order of {order.num_items} items x {order.batch_size} for {len(groups)} groups x {batch_size}"
            )
        self.order = order
        self._step = 0
        self._cache: Optional[Tensor] = None
        self._iterator: Optional[Iterator] = None
        self._iterator_step = 0

    def _choose_mode(self, mode: ImageCacheMode, device_limit_gib: float, cpu_limit_gib: float) -> str:
        if mode != "auto":
            return mode
        used = {int(i) for i in self.groups.flatten().tolist() if i >= 0}
        gib = len(used) * self.height * self.width * 3 / 2**30
        if self.device.type == "cuda" and gib <= device_limit_gib:
            return "device"
        if gib <= cpu_limit_gib:
            return "cpu"
        return "disk"

    def _load_cache(self) -> Tensor:
        count = len(self.filenames)
        where = self.device if self.mode == "device" else torch.device("cpu")
        cache = torch.zeros(count + 1, self.height, self.width, 3, dtype=torch.uint8, device=where)  # last row: missing
        used = sorted({int(i) for i in self.groups.flatten().tolist() if i >= 0})
        with (
            Progress(transient=True) as progress,
            ThreadPoolExecutor(max_workers=max(1, min(16, self.num_workers))) as pool,
        ):
            task = progress.add_task(f"caching {len(used)} images ({self.mode})", total=len(used))
            for index, image in zip(
                used, pool.map(lambda i: read_png_uint8(self.filenames[i], self.height, self.width), used), strict=False
            ):
                cache[index] = image.to(where)
                progress.advance(task)
        return cache

    def next_batch(self, step: Optional[int] = None) -> Tuple[Tensor, UInt8[Tensor, "B 8 H W 3"]]:
        """Group ids ``[B]`` (rows of ``groups``) and their images ``uint8 [B, 8, H, W, 3]`` on the device.

        ``step`` picks the groups (``order.batch(step)``); None continues after the previous call.
        """
        step = self._step if step is None else step
        self._step = step + 1
        if self.mode in ("device", "cpu"):
            if self._cache is None:
                self._cache = self._load_cache()
            group_ids = self.order.batch(step)
            frames = self.groups[group_ids]
            frames = torch.where(frames < 0, torch.full_like(frames, len(self.filenames)), frames)
            images = self._cache[frames.to(self._cache.device)]
            return group_ids, images.to(self.device, non_blocking=True)
        if self._iterator is None or self._iterator_step != step:  # first call, or a jump (resume): restart there
            self._iterator = self._loader_iterator(step)
        group_ids, images = next(self._iterator)
        self._iterator_step = step + 1
        return group_ids, images.to(self.device, non_blocking=True)

    def _loader_iterator(self, start: int) -> Iterator:
        """Batches of steps ``start, start + 1, ...`` decoded ahead in worker processes."""
        dataset = _GroupDataset(self.filenames, self.groups, self.height, self.width)
        loader = DataLoader(
            dataset,
            batch_sampler=_StepBatches(self.order, start),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
        )
        return iter(loader)


class _StepBatches:
    """Endless batch sampler: the group ids of steps ``start, start + 1, ...`` of a :class:`ShardedOrder`."""

    def __init__(self, order: ShardedOrder, start: int) -> None:
        self.order, self.start = order, start

    def __iter__(self) -> Iterator[List[int]]:
        step = self.start
        while True:
            yield self.order.batch(step).tolist()
            step += 1
