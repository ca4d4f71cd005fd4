"""DVR benchmark helpers: the baselines DVR must beat, scored with the same mesh metrics, and a mesh picture.

    python benchmarks/dvr_baselines.py mean-shape --data DVR_ROOT --out mean_shape.json [--resolution 64]
        "The mean training shape": the visual hulls of every training object (from its masks) averaged into a
        mean occupancy grid, meshed at 0.5 and scored against every test object's pointcloud.npz.
    python benchmarks/dvr_baselines.py visual-hull --data SCENE --out visual_hull.json [--resolution 128]
        The visual hull of a multi-view scene's masks, meshed and scored against its pointcloud.npz.
    python benchmarks/dvr_baselines.py render --mesh MESH.ply --out MESH.png
        Lambertian-shaded pictures of a mesh from two sides with its vertex colours (matplotlib, no OpenGL).

Everything works in the nerfstudio world of the shapenet-dvr-data dataparser (the z-up turned unit cube).
"""

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import torch

from bts_studio.core.mise import grid_points
from bts_studio.core.visual_hull import visual_hull_occupancy
from bts_studio.data.shapenet.dvr_dataparser import ShapeNetDVRDataParserConfig
from bts_studio.data.shapenet.dvr_reader import load_pointcloud
from bts_studio.eval.meshes import grid_to_mesh, mesh_metrics, write_mesh
from bts_studio.methods.common.cameras import cameras_to_opencv_w2c
from bts_studio.methods.dvr.datamanager import read_mask

HALF = 0.5


def object_hulls(outputs, resolution: int, device: str) -> List[torch.Tensor]:
    """Visual-hull occupancy grids ``[R+1]^3`` (float) of every object of a parsed split."""
    points = grid_points(resolution, HALF, device).reshape(-1, 3)
    instance = outputs.cameras.metadata["instance_idx"].reshape(-1)
    K, w2c = cameras_to_opencv_w2c(outputs.cameras)
    masks = outputs.metadata["mask_filenames"]
    grids = []
    for obj in range(int(instance.max()) + 1):
        views = torch.nonzero(instance == obj)[:, 0]
        mask = torch.from_numpy(np.stack([read_mask(Path(masks[v])) for v in views.tolist()])).to(device)
        occupied = visual_hull_occupancy(points, K[views].to(device), w2c[views].to(device), mask)
        grids.append(occupied.float().reshape((resolution + 1,) * 3))
    return grids


def score(mesh, outputs, obj: int, num_points: int, threshold: float) -> Dict[str, float]:
    transform = outputs.metadata["object_to_world"].numpy()
    points, normals = load_pointcloud(Path(outputs.metadata["pointcloud_filenames"][obj]), transform)
    return mesh_metrics(mesh, points, normals, num_points, threshold)


def average(rows: List[Dict[str, float]]) -> Dict[str, float]:
    return {key: float(np.mean([row[key] for row in rows])) for key in rows[0]}


def mean_shape(args) -> Dict:
    parser = ShapeNetDVRDataParserConfig(data=args.data).setup()
    train, test = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("test")
    start = time.perf_counter()
    mean = torch.stack(object_hulls(train, args.resolution, args.device)).mean(dim=0)
    mesh = grid_to_mesh(mean, HALF, 0.5)
    rows = [
        score(mesh, test, obj, args.num_points, args.fscore_threshold) for obj in range(test.metadata["num_instances"])
    ]
    if args.mesh:
        write_mesh(mesh, args.mesh, overwrite=True)
    return {"baseline": "mean training shape (mean visual-hull occupancy of the training objects, level 0.5)",
            "resolution": args.resolution, "num_train_objects": train.metadata["num_instances"],
            "num_test_objects": len(rows), "seconds": time.perf_counter() - start, **average(rows)}  # fmt: skip


def visual_hull(args) -> Dict:
    outputs = ShapeNetDVRDataParserConfig(data=args.data).setup().get_dataparser_outputs("train")
    start = time.perf_counter()
    hull = object_hulls(outputs, args.resolution, args.device)[0]
    mesh = grid_to_mesh(hull, HALF, 0.5)
    if args.mesh:
        write_mesh(mesh, args.mesh, overwrite=True)
    metrics = score(mesh, outputs, 0, args.num_points, args.fscore_threshold)
    return {"baseline": f"visual hull of {len(outputs.cameras)} masks", "resolution": args.resolution,
            "seconds": time.perf_counter() - start, **metrics}  # fmt: skip


def _view_rotation(azimuth: float, elevation: float) -> np.ndarray:
    """World (z up) -> camera rows ``[right, up, towards the viewer]`` for a camera on a sphere around the origin."""
    a, e = np.radians(azimuth), np.radians(elevation)
    towards = np.array([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)])  # object -> camera
    right = np.cross([0.0, 0.0, 1.0], towards)
    right /= np.linalg.norm(right)
    return np.stack([right, np.cross(towards, right), towards])


def render(args) -> None:
    """Lambertian-shaded pictures of a mesh from two sides: vertex colours x (ambient + diffuse) from vertex normals.

    Faces are projected orthographically, sorted back to front and filled by matplotlib's 2D ``PolyCollection``
    (mplot3d's own depth sorting breaks on 100k small faces). The key light sits above and to the left of the
    camera; ``|n . l|`` lights both sides, so a mesh with flipped faces still reads as a shape.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import trimesh
    from matplotlib.collections import PolyCollection

    mesh = trimesh.load(args.mesh, process=False)
    if len(mesh.faces) == 0:
        raise SystemExit(f"{args.mesh} is empty (no surface at the threshold); nothing to draw")
    if getattr(mesh.visual, "kind", None) == "vertex":
        colours = np.asarray(mesh.visual.vertex_colors, dtype=np.float64)[:, :3] / 255.0
    else:  # a mesh without colours (e.g. a baseline) is drawn light grey
        colours = np.full((len(mesh.vertices), 3), 0.8)
    normals = np.asarray(mesh.vertex_normals, dtype=np.float64)
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces)
    if len(faces) > args.max_faces:  # an even subset keeps the picture light; sorted drawing hides the gaps
        faces = faces[np.linspace(0, len(faces) - 1, args.max_faces).astype(int)]
    views = [(-50.0, 20.0), (40.0, 35.0)]
    figure, axes_row = plt.subplots(1, len(views), figsize=(3 * len(views), 3), dpi=args.dpi)
    for axes, (azimuth, elevation) in zip(axes_row, views, strict=True):
        rotation = _view_rotation(azimuth, elevation)
        camera = vertices @ rotation.T
        light = np.array([-0.4, 0.6, 1.0]) / np.linalg.norm([-0.4, 0.6, 1.0])  # in camera axes
        lambert = np.abs((normals @ rotation.T) @ light)
        shaded = np.clip(colours * (0.35 + 0.75 * lambert)[:, None], 0, 1)
        order = np.argsort(camera[faces, 2].mean(axis=1))  # far faces first
        polygons = camera[faces[order]][..., :2]
        face_colours = shaded[faces[order]].mean(axis=1)
        axes.add_collection(PolyCollection(polygons, facecolors=face_colours, edgecolors=face_colours, linewidths=0.2))
        axes.set_xlim(-0.55, 0.55)
        axes.set_ylim(-0.55, 0.55)
        axes.set_aspect("equal")
        axes.set_axis_off()
    figure.tight_layout(pad=0.1)
    figure.savefig(args.out, facecolor="white")
    print(f"wrote {args.out} ({len(faces)} of {len(mesh.faces)} faces, {len(views)} views)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["mean-shape", "visual-hull", "render"])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mesh", type=Path, help="mesh to write (baselines) or to draw (render)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--num-points", type=int, default=100_000)
    parser.add_argument("--fscore-threshold", type=float, default=0.01)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-faces", type=int, default=200_000)
    parser.add_argument("--dpi", type=int, default=100)
    args = parser.parse_args()
    if args.mode == "render":
        render(args)
        return
    result = mean_shape(args) if args.mode == "mean-shape" else visual_hull(args)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
