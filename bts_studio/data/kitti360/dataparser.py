"""``kitti360-data``: a nerfstudio dataparser that reads a real KITTI-360 folder as it is downloaded.

It returns, for one split, the images that Behind the Scenes' KITTI-360 samples use, as nerfstudio
``PERSPECTIVE`` cameras at the target resolution:

- rectified perspective images (``image_00`` / ``image_01``) resized as BTS resizes them, and
- fisheye images (``image_02`` / ``image_03``) resampled to virtual pinhole cameras
  (:mod:`bts_studio.data.kitti360.fisheye_resample`),

both cached next to the data in BTS's preprocessed folders (:mod:`bts_studio.data.kitti360.image_cache`),
plus, per split entry, BTS's 8-frame group (``outputs.metadata["frame_groups"]``) and, for evaluation,
lidar z-depth maps (:mod:`bts_studio.data.kitti360.lidar_depth`).

Conventions (docs/conventions.md): poses become OpenGL camera-to-world; the world is KITTI-360's metric,
z-up world, only recentred on the first selected frame's left camera (``dataparser_transform`` holds the
translation, ``dataparser_scale`` is 1).

Frame groups follow BTS (``Kitti360Dataset.__getitem__`` with ``frame_count: 2``, ``fisheye_offset: 10``):
columns are 0 input camera at t, 1 same camera at t+1, 2 other perspective camera at t, 3 it at t+1,
4 / 5 same-side fisheye at t+offset / t+offset+1, 6 / 7 other-side fisheye at the same times; "same side"
is left for ``l`` entries and right for ``r`` ones. Times are pose indices (rows of ``poses.txt``),
clamped to the sequence as BTS clamps them. An entry is -1 where that image is not part of the split.
"""

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Set, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.utils.rich_utils import CONSOLE

from bts_studio.core.geometry import opencv_to_opengl
from bts_studio.data.kitti360 import reader as formats
from bts_studio.data.kitti360.reader import Kitti360FormatError, Kitti360Paths
from bts_studio.data.kitti360.rig import CAMERA_FOLDERS, FISHEYE_IDS, Kitti360Rig, frame_group_layout, load_rig
from bts_studio.data.kitti360.splits import SplitEntry, interleaved_split, read_split_file, resolve_split_file

CameraName = Literal["image_00", "image_01", "image_02", "image_03"]
GROUP_SIZE = 8
"""Images per BTS KITTI-360 sample (see the module docstring for the column order)."""

SCENE_MARGIN_M = 80.0
"""The scene box reaches this far beyond the cameras: BTS's far plane."""


@dataclass
class Kitti360DataParserConfig(DataParserConfig):
    """Configuration of the KITTI-360 dataparser (Behind the Scenes' data)."""

    _target: Type = field(default_factory=lambda: Kitti360DataParser)
    """Target class to instantiate."""
    data: Path = Path("data/KITTI-360")
    """KITTI-360 root, as downloaded: holds calibration/, data_poses/, data_2d_raw/ (data_3d_raw/ for lidar depth)."""
    sequences: Tuple[str, ...] = ()
    """Sequences by folder name or number (0 = 2013_05_28_drive_0000_sync). Empty: all that have poses.txt."""
    split_file: Optional[Path] = None
    """BTS split file ('<seq> <image id> <l|r>' lines) used for every split, or a folder with BTS's
    {train,val,test}_files.txt (e.g. BTS's datasets/kitti_360/splits/seg). Unset: the split of test_every."""
    frame_range: Optional[Tuple[int, int]] = None
    """Keep only input frames whose image id is in [START, END). Unset: all frames."""
    test_every: int = 10
    """Without split_file: every n-th posed frame is a val/test input (left camera), the rest train inputs (both)."""
    cameras: Tuple[CameraName, ...] = ("image_00", "image_01", "image_02", "image_03")
    """Cameras to load: image_00/01 left/right rectified perspective, image_02/03 left/right fisheye."""
    use_fisheye: bool = True
    """Load the fisheyes (image_02, image_03) as virtual pinholes; False switches them off whatever cameras says."""
    target_height: int = 192
    """Height of the parsed images (BTS: 192); perspective images are resized per axis, as BTS does."""
    target_width: int = 640
    """Width of the parsed images (BTS: 640)."""
    downscale_factor: Optional[float] = None
    """Divide target_height and target_width by this (``ns-render dataset --downscale-factor``); None: 1."""
    fisheye_pitch_deg: float = 15.0
    """The virtual pinholes made from the fisheyes look this many degrees below the fisheye axis (BTS: 15)."""
    fisheye_yaw_deg: float = 0.0
    """Yaw of the left fisheye's virtual pinhole about its y axis, mirrored for the right one (BTS: 0)."""
    fisheye_offset: int = 10
    """A group's fisheye frames are this many poses after its input frame (BTS: 10, about one second)."""
    eval_group_members: Tuple[int, ...] = (0, 2)
    """Frame-group columns in the val/test splits (0 input, 2 stereo partner; 0..7 = whole group). Train: all."""
    lidar_depth_splits: Tuple[Literal["train", "val", "test"], ...] = ("val", "test")
    """Splits whose input images get a velodyne z-depth map (metadata lidar_depth_filenames), as BTS evaluates."""
    cache_dir: Optional[Path] = None
    """Root of the image/depth cache (KITTI-360 layout). Unset: next to the data, as BTS preprocesses; a read-only
    dataset falls back to ~/.cache/bts-studio."""


@dataclass
class _Sequence:
    """What the parser knows about one sequence."""

    paths: Kitti360Paths
    frame_ids: np.ndarray
    poses: np.ndarray
    pose_index: Dict[int, int]
    available: Dict[int, Set[int]] = field(default_factory=dict)
    """Camera id -> image ids present as originals or in the cache."""


def _image_ids(folder: Path, suffix: str) -> Set[int]:
    if not folder.is_dir():
        return set()
    return {
        int(name[: -len(suffix)])
        for name in os.listdir(folder)
        if name.endswith(suffix) and name[0] != "." and name[: -len(suffix)].isdigit()
    }


def _download_of(camera: int) -> str:
    return formats.DOWNLOAD_FISHEYE if camera in FISHEYE_IDS else formats.DOWNLOAD_PERSPECTIVE


def _normalise_sequence(name: str) -> str:
    return formats.sequence_name(int(name)) if name.isdigit() else name


@dataclass
class Kitti360DataParser(DataParser):
    """Parse real (or synthetic) KITTI-360 into nerfstudio cameras, cached images, frame groups and lidar depth."""

    config: Kitti360DataParserConfig

    def __init__(self, config: Kitti360DataParserConfig):
        super().__init__(config=config)
        self.config = config

    # ----------------------------------------------------------------------------------------------- config
    @property
    def target_size(self) -> Tuple[int, int]:
        """``(height, width)`` of the parsed images."""
        factor = self.config.downscale_factor or 1.0
        if factor <= 0:
            raise ValueError(f"kitti360-data: downscale_factor must be > 0, got {factor}")
        return (round(self.config.target_height / factor), round(self.config.target_width / factor))

    def _enabled_cameras(self) -> Tuple[int, ...]:
        enabled = {CAMERA_FOLDERS.index(name) for name in self.config.cameras}
        if not self.config.use_fisheye:
            enabled -= set(FISHEYE_IDS)
        return tuple(sorted(enabled))

    def _cache_root(self) -> Path:
        from bts_studio.data.checks import ensure_writable_dir
        from bts_studio.data.kitti360.image_cache import CACHE_OPTION

        if self.config.cache_dir is not None:
            return ensure_writable_dir(self.config.cache_dir, CACHE_OPTION, Kitti360FormatError)
        root = Path(self.config.data)
        if os.access(root / "data_2d_raw", os.W_OK):
            return root
        digest = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:12]
        fallback = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "bts-studio" / "kitti360" / digest
        CONSOLE.log(f"[yellow]{root} is read-only; caching resized images in {fallback} (set cache_dir to choose).")
        return ensure_writable_dir(fallback, CACHE_OPTION, Kitti360FormatError)

    def _perspective_folder(self, cache_root: Path, sequence: str, camera: int) -> Path:
        height, width = self.target_size
        return cache_root / "data_2d_raw" / sequence / CAMERA_FOLDERS[camera] / f"data_{height}x{width}"

    def _fisheye_folder(self, cache_root: Path, sequence: str, camera: int) -> Path:
        from bts_studio.data.kitti360.fisheye_resample import fisheye_folder_name

        name = fisheye_folder_name(*self.target_size, self.config.fisheye_pitch_deg, self.config.fisheye_yaw_deg)
        return cache_root / "data_2d_raw" / sequence / CAMERA_FOLDERS[camera] / name

    def _depth_folder(self, cache_root: Path, sequence: str, camera: int) -> Path:
        height, width = self.target_size
        name = f"depth_{height}x{width}_{CAMERA_FOLDERS[camera]}"
        return cache_root / "data_3d_raw" / sequence / "velodyne_points" / name

    def _image_folder(self, cache_root: Path, rig: Kitti360Rig, sequence: str, camera: int) -> Path:
        """Where the parsed image of a camera lives: the cache, or the originals when no resize is needed."""
        if camera in FISHEYE_IDS:
            return self._fisheye_folder(cache_root, sequence, camera)
        if rig.perspective_size == self.target_size:
            return Kitti360Paths(self.config.data, sequence).image_dir(camera)
        return self._perspective_folder(cache_root, sequence, camera)

    # -------------------------------------------------------------------------------------------- sequences
    def _select_sequences(self) -> List[str]:
        present = formats.list_sequences(self.config.data)
        requested = [_normalise_sequence(name) for name in self.config.sequences]
        if requested:
            unknown = [name for name in requested if name not in present]
            if unknown:
                raise Kitti360FormatError(
                    f"{Path(self.config.data) / 'data_2d_raw'}: no sequence {', '.join(unknown)}; present: "
                    f"{', '.join(present) or 'none'}. Sequences come with the KITTI-360 download "
                    f"{formats.DOWNLOAD_PERSPECTIVE}."
                )
            return list(dict.fromkeys(requested))
        posed = [name for name in present if Kitti360Paths(self.config.data, name).poses.is_file()]
        if len(posed) < len(present):
            CONSOLE.log(f"Skipping sequences without poses.txt: {', '.join(sorted(set(present) - set(posed)))}.")
        if not posed:
            listed = ", ".join(present) or "the sequences of data_2d_raw (none)"
            raise Kitti360FormatError(
                f"{Path(self.config.data) / 'data_poses'}: no <seq>/poses.txt for any of {listed}. "
                f"It is part of the KITTI-360 download {formats.DOWNLOAD_POSES}."
            )
        return posed

    def _load_sequence(self, name: str, cameras: Tuple[int, ...], cache_root: Path, rig: Kitti360Rig) -> _Sequence:
        paths = Kitti360Paths(self.config.data, name)
        frame_ids, poses = formats.read_poses(paths.poses)
        sequence = _Sequence(paths, frame_ids, poses, {int(i): k for k, i in enumerate(frame_ids)})
        for camera in cameras:
            source = paths.image_dir(camera)
            cached = self._image_folder(cache_root, rig, name, camera)
            if not source.is_dir() and not cached.is_dir():
                hint = " (or set use_fisheye False)" if camera in FISHEYE_IDS else ""
                raise Kitti360FormatError(
                    f"{source}: folder not found. It is part of the KITTI-360 download {_download_of(camera)}{hint}."
                )
            sequence.available[camera] = _image_ids(source, ".png") | _image_ids(cached, ".png")
        return sequence

    # ------------------------------------------------------------------------------------------------ split
    def _split_entries(
        self, split: str, selected: List[str], load, problems: Counter
    ) -> Tuple[List[SplitEntry], Optional[Path]]:
        """The split's input entries, and the split file they come from (None for the interleaved split)."""
        if self.config.split_file is None:
            frame_ids = {}
            for name in selected:
                sequence = load(name)
                if 0 not in sequence.available:
                    frame_ids[name] = sequence.frame_ids
                    continue
                have_left = np.array([int(i) in sequence.available[0] for i in sequence.frame_ids], dtype=bool)
                frame_ids[name] = sequence.frame_ids[have_left]
                unposed = len(sequence.available[0] - set(sequence.pose_index))
                if unposed:
                    problems[f"frames missing from {name}/poses.txt"] += unposed
            return interleaved_split(frame_ids, split, self.config.test_every, self.config.frame_range), None
        split_path = resolve_split_file(Path(self.config.split_file), split)
        entries = read_split_file(split_path)
        if not entries:
            raise Kitti360FormatError(
                f"split file {split_path} (answering split {split!r}) has no entries; expected lines "
                "'<sequence> <image id> <l|r>', e.g. '2013_05_28_drive_0000_sync 0000000386 l'."
            )
        present = set(formats.list_sequences(self.config.data))
        # --sequences is applied before the check, so a partial download can use the official split files.
        wanted = {entry.sequence for entry in entries} if not self.config.sequences else set(selected)
        unknown = sorted({entry.sequence for entry in entries} & wanted - present)
        if unknown:
            raise Kitti360FormatError(
                f"{split_path} names sequence(s) {', '.join(unknown)} that {Path(self.config.data) / 'data_2d_raw'} "
                f"lacks; present: {', '.join(sorted(present)) or 'none'}. Download them (KITTI-360 download "
                f"{formats.DOWNLOAD_PERSPECTIVE}) or restrict the run to the present ones with --sequences."
            )
        kept = [entry for entry in entries if entry.sequence in selected]
        if len(kept) < len(entries):
            CONSOLE.log(f"{split_path}: {len(entries) - len(kept)} entries of unselected sequences left out.")
        if not kept:
            raise Kitti360FormatError(
                f"split file {split_path}: none of its {len(entries)} entries is in the selected sequence(s) "
                f"{', '.join(selected)} (it lists {', '.join(sorted({e.sequence for e in entries}))}); "
                "change --sequences or --split-file."
            )
        if self.config.frame_range is not None:
            start, end = self.config.frame_range
            kept = [entry for entry in kept if start <= entry.image_id < end]
            if not kept:
                raise Kitti360FormatError(
                    f"split file {split_path}: no entry of the selected sequences has an image id in --frame-range "
                    f"[{start}, {end})."
                )
        return kept, split_path

    # -------------------------------------------------------------------------------------------- outputs
    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        if split not in ("train", "val", "test"):
            raise ValueError(f"unknown split {split!r}; kitti360-data answers 'train', 'val' and 'test'.")
        root = Path(self.config.data)
        if not root.is_dir():
            raise Kitti360FormatError(f"{root}: KITTI-360 root folder not found (set --data to it).")
        cameras = self._enabled_cameras()
        rig = load_rig(
            root,
            self.target_size,
            self.config.fisheye_pitch_deg,
            self.config.fisheye_yaw_deg,
            with_fisheyes=any(camera in FISHEYE_IDS for camera in cameras),
        )
        selected = self._select_sequences()
        cache_root = self._cache_root()
        loaded: Dict[str, _Sequence] = {}

        def load(name: str) -> _Sequence:
            if name not in loaded:
                loaded[name] = self._load_sequence(name, cameras, cache_root, rig)
            return loaded[name]

        problems: Counter = Counter()
        entries, split_path = self._split_entries(split, selected, load, problems)
        members = range(GROUP_SIZE) if split == "train" else self.config.eval_group_members
        groups, keys = self._build_groups(entries, selected, cameras, set(members), load, split_path, problems)
        self._report(problems, split)
        if len(groups) == 0:
            source = f"split file {split_path}" if split_path is not None else "interleaved split (test_every)"
            reasons = "; ".join(f"{count} {what}" for what, count in sorted(problems.items()))
            raise Kitti360FormatError(
                f"split {split!r} of {root} has no usable input frame (from the {source}: {len(entries)} entries; "
                f"sequences {', '.join(selected)}, cameras {', '.join(CAMERA_FOLDERS[c] for c in cameras)}"
                + (f", frame range {list(self.config.frame_range)}" if self.config.frame_range is not None else "")
                + f"). Skipped: {reasons or 'nothing (no entries)'}."
            )

        image_filenames = self._cache_images(keys, selected, loaded, rig, cache_root)
        depth_filenames = self._cache_lidar_depth(split, groups, keys, selected, loaded, rig, cache_root)
        return self._outputs(split, groups, keys, selected, loaded, rig, image_filenames, depth_filenames, load)

    def _build_groups(self, entries, selected, cameras, members, load, split_path, problems: Counter):
        """BTS frame groups of the entries, and the sorted image keys ``(sequence index, camera, pose index)``."""
        group_keys: List[List[Optional[Tuple[int, int, int]]]] = []
        for entry in entries:
            if entry.sequence not in selected:
                continue
            sequence = load(entry.sequence)
            side = 1 if entry.is_right else 0
            if side not in cameras:
                problems[f"entries whose input camera {CAMERA_FOLDERS[side]} is switched off"] += 1
                continue
            if entry.image_id not in sequence.available[side]:
                path = sequence.paths.image(side, entry.image_id)
                if split_path is not None:
                    raise Kitti360FormatError(
                        f"{split_path}: entry '{entry.to_line()}' names a frame whose image {path} does not exist. "
                        f"It is part of the KITTI-360 download {formats.DOWNLOAD_PERSPECTIVE}."
                    )
                problems[f"input frames without a {CAMERA_FOLDERS[side]} image"] += 1
                continue
            if entry.image_id not in sequence.pose_index:
                problems[f"frames missing from {entry.sequence}/poses.txt"] += 1
                continue
            t = sequence.pose_index[entry.image_id]
            layout = frame_group_layout(side, t, len(sequence.frame_ids) - 1, self.config.fisheye_offset)
            sequence_index = selected.index(entry.sequence)
            row: List[Optional[Tuple[int, int, int]]] = []
            for column, (camera, pose_index) in enumerate(layout):
                if column not in members or camera not in cameras:
                    row.append(None)
                elif int(sequence.frame_ids[pose_index]) not in sequence.available[camera]:
                    problems[f"group members without a {CAMERA_FOLDERS[camera]} image (left as -1)"] += 1
                    row.append(None)
                else:
                    row.append((sequence_index, camera, pose_index))
            group_keys.append(row)
        keys = sorted({key for row in group_keys for key in row if key is not None})
        index_of = {key: i for i, key in enumerate(keys)}
        groups = torch.tensor(
            [[index_of[k] if k is not None else -1 for k in row] for row in group_keys], dtype=torch.long
        ).view(-1, GROUP_SIZE)
        return groups, keys

    @staticmethod
    def _report(problems: Counter, split: str) -> None:
        if problems:
            summary = "; ".join(f"{count} {what}" for what, count in sorted(problems.items()))
            CONSOLE.log(f"kitti360-data ({split}): skipped {summary}.")

    def _cache_images(self, keys, selected, loaded, rig, cache_root) -> List[Path]:
        """Make the resized / resampled images that are not cached yet; returns the parsed image paths."""
        from bts_studio.data.kitti360.fisheye_resample import FisheyeToPinhole
        from bts_studio.data.kitti360.image_cache import CacheJob, cache_images, resize_like_bts

        filenames: List[Path] = []
        jobs: Dict[int, List[CacheJob]] = {camera: [] for camera in range(4)}
        folders: Dict[int, Set[Path]] = {camera: set() for camera in range(4)}
        for sequence_index, camera, pose_index in keys:
            name = selected[sequence_index]
            frame = int(loaded[name].frame_ids[pose_index])
            folder = self._image_folder(cache_root, rig, name, camera)
            target = folder / f"{frame:010d}.png"
            filenames.append(target)
            source = loaded[name].paths.image(camera, frame)
            if source != target:
                jobs[camera].append(CacheJob(source, target))
                folders[camera].add(folder)

        height, width = self.target_size
        perspective_key = {
            "kind": "perspective",
            "source_size": list(rig.perspective_size),
            "size": [height, width],
            "resize": "cv2.INTER_LINEAR",
        }
        for camera in (0, 1):
            cache_images(
                jobs[camera],
                {folder: perspective_key for folder in folders[camera]},
                lambda: lambda image: resize_like_bts(image, self.target_size),
                rig.perspective_size,
                formats.DOWNLOAD_PERSPECTIVE,
                f"resizing {CAMERA_FOLDERS[camera]} to {height}x{width}",
            )
        for camera in FISHEYE_IDS:
            if not jobs[camera]:
                continue
            params = rig.fisheyes[camera]
            rotation = torch.from_numpy(rig.fisheye_rotations[camera])
            key = {
                "kind": "fisheye",
                "K": rig.K.tolist(),
                "size": [height, width],
                "rotation": rig.fisheye_rotations[camera].tolist(),
                "mei": vars(params).copy(),
                "sampling": "cv2.remap INTER_LINEAR, black outside",
            }
            cache_images(
                jobs[camera],
                {folder: key for folder in folders[camera]},
                lambda: FisheyeToPinhole(rig.K_tensor(), height, width, rotation, params),  # noqa: B023
                (params.height, params.width),
                formats.DOWNLOAD_FISHEYE,
                f"resampling {CAMERA_FOLDERS[camera]} to {height}x{width} pinholes",
            )
        return filenames

    def _cache_lidar_depth(self, split, groups, keys, selected, loaded, rig, cache_root) -> List[Optional[Path]]:
        """Depth maps of the groups' input images (``None`` for every other image or without a scan)."""
        from bts_studio.data.kitti360.image_cache import (
            CacheJob,
            prepare_cache_folder,
            record_jobs,
            run_jobs,
            stale_jobs,
        )
        from bts_studio.data.kitti360.lidar_depth import save_depth_atomically, velodyne_depth_map

        depth_filenames: List[Optional[Path]] = [None] * len(keys)
        if split not in self.config.lidar_depth_splits:
            return depth_filenames
        jobs: List[CacheJob] = []
        job_camera: Dict[Path, int] = {}
        scans: Dict[str, Set[int]] = {}
        missing_scans = Counter()
        for image_index in sorted({int(i) for i in groups[:, 0].tolist()}):
            sequence_index, camera, pose_index = keys[image_index]
            name = selected[sequence_index]
            if name not in scans:
                scans[name] = _image_ids(loaded[name].paths.velodyne_dir, ".bin")
            frame = int(loaded[name].frame_ids[pose_index])
            if frame not in scans[name]:
                missing_scans[name] += 1
                continue
            folder = self._depth_folder(cache_root, name, camera)
            job = CacheJob(loaded[name].paths.velodyne(frame), folder / f"{frame:010d}.npy")
            jobs.append(job)
            job_camera[folder] = camera
            depth_filenames[image_index] = job.target
        if missing_scans:
            where = ", ".join(f"{name}: {count}" for name, count in sorted(missing_scans.items()))
            CONSOLE.log(
                f"kitti360-data ({split}): no velodyne scan for {sum(missing_scans.values())} input frames "
                f"({where}); they get no lidar depth. Scans come with {formats.DOWNLOAD_VELODYNE}."
            )
        K = rig.K_tensor()
        height, width = self.target_size
        for folder, camera in job_camera.items():
            prepare_cache_folder(
                folder,
                {
                    "kind": "lidar_depth",
                    "K": rig.K.tolist(),
                    "size": [height, width],
                    "velo_to_camera": rig.velo_to_camera(camera).tolist(),
                },
            )

        def make(job: CacheJob) -> None:
            camera = job_camera[job.target.parent]
            scan = formats.read_velodyne(job.source)
            save_depth_atomically(job.target, velodyne_depth_map(scan, rig.velo_to_camera(camera), K, height, width))

        run_jobs(stale_jobs(jobs), make, f"projecting lidar to {height}x{width} depth")
        record_jobs(jobs)
        return depth_filenames

    def _origin(self, selected: List[str], load, rig: Kitti360Rig) -> np.ndarray:
        """World position of the first selected sequence's first (in-range) posed frame's left camera.

        It depends on the configuration only, never on the split, so every split shares one world.
        """
        sequence = load(selected[0])
        index = 0
        if self.config.frame_range is not None:
            in_range = np.nonzero(sequence.frame_ids >= self.config.frame_range[0])[0]
            index = int(in_range[0]) if len(in_range) else 0
        return (sequence.poses[index] @ rig.camera_to_pose[0])[:3, 3]

    def _outputs(self, split, groups, keys, selected, loaded, rig, image_filenames, depth_filenames, load):
        key_array = np.array(keys, dtype=np.int64).reshape(-1, 3)
        c2w = np.empty((len(keys), 4, 4))
        for sequence_index in np.unique(key_array[:, 0]):
            rows = key_array[:, 0] == sequence_index
            poses = loaded[selected[sequence_index]].poses[key_array[rows, 2]]
            c2w[rows] = poses @ rig.camera_to_pose[key_array[rows, 1]]
        origin = self._origin(selected, load, rig)
        c2w[:, :3, 3] -= origin
        camera_to_worlds = opencv_to_opengl(torch.from_numpy(c2w[:, :3, :])).float()
        transform = torch.eye(4)[:3, :]
        transform[:, 3] = torch.from_numpy(-origin).float()

        count = len(keys)
        K = rig.K
        height, width = self.target_size
        frame_ids = [int(loaded[selected[s]].frame_ids[p]) for s, _, p in keys]

        def column(values) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values), dtype=torch.long).view(count, 1)

        cameras = Cameras(
            camera_to_worlds=camera_to_worlds,
            fx=torch.full((count, 1), float(K[0, 0])),
            fy=torch.full((count, 1), float(K[1, 1])),
            cx=torch.full((count, 1), float(K[0, 2])),
            cy=torch.full((count, 1), float(K[1, 2])),
            width=torch.full((count, 1), width, dtype=torch.long),
            height=torch.full((count, 1), height, dtype=torch.long),
            camera_type=CameraType.PERSPECTIVE,
            metadata={
                "sequence_idx": column(key_array[:, 0]),
                "frame_id": column(frame_ids),
                "camera_id": column(key_array[:, 1]),
                "pose_index": column(key_array[:, 2]),
            },
        )
        positions = camera_to_worlds[:, :3, 3]
        scene_box = SceneBox(
            aabb=torch.stack([positions.min(0).values - SCENE_MARGIN_M, positions.max(0).values + SCENE_MARGIN_M])
        )
        metadata = {
            "sequences": list(selected),
            "frame_groups": groups,
            "lidar_depth_filenames": depth_filenames,
            "data_root": Path(self.config.data),
            "target_size": (height, width),
            "camera_to_pose": torch.from_numpy(rig.camera_to_pose).float(),
            "velo_to_pose": torch.from_numpy(rig.velo_to_pose).float(),
        }
        return DataparserOutputs(
            image_filenames=image_filenames,
            cameras=cameras,
            scene_box=scene_box,
            metadata=metadata,
            dataparser_transform=transform,
            dataparser_scale=1.0,
        )
