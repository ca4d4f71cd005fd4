"""DVR benchmark helpers: the baselines DVR must beat, scored with the same mesh metrics, and a mesh picture.

    python benchmarks/dvr_baselines.py mean-shape --data DVR_ROOT --out mean_shape.json [--resolution 64]
        "The mean training shape": the visual hulls of every training object (from its masks) averaged into a
        mean occupancy grid, meshed at 0.5 and scored against every test object's pointcloud.npz.
        --refinement-steps 30 also scores the mesh after DVR's refinement on the grid's trilinear field
        (under "refined"; the baseline's own numbers stay those of the unrefined mesh).
    python benchmarks/dvr_baselines.py visual-hull --data SCENE --out visual_hull.json [--resolution 128]
        The visual hull of a multi-view scene's masks, meshed and scored against its pointcloud.npz.
    python benchmarks/dvr_baselines.py normals --data DVR_ROOT --out normals.json [--resolution 128]
        Does marching cubes at 256^3 lower normal consistency, and does DVR's vertex refinement
        (core/mesh_refinement.py) restore it? A smooth occupancy field per test object (its own visual hull at
        --resolution, Gaussian-smoothed by --smooth voxels, trilinearly interpolated, as logits) meshed at 64^3
        and 256^3 (MISE as the pipeline), each with and without refinement, scored as DVR scores meshes; the mean
        training shape too. --field network fits a DVR decoder to that field first (a trained network's stand-in).
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

from bts_studio.core.mesh_refinement import refine_mesh_vertices
from bts_studio.core.mise import grid_points, mise_grid
from bts_studio.core.trilinear import trilinear_interpolate
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
    result = {"baseline": "mean training shape (mean visual-hull occupancy of the training objects, level 0.5)",
              "resolution": args.resolution, "num_train_objects": train.metadata["num_instances"],
              "num_test_objects": len(rows), "seconds": time.perf_counter() - start, **average(rows)}  # fmt: skip
    if args.refinement_steps > 0:  # reported beside the baseline, which stays unrefined (docs/dvr.md)
        refined = refined_variants(mesh, trilinear_logits(mean), args).get("refined")
        if refined is not None:
            count = test.metadata["num_instances"]
            rows = [score(refined, test, obj, args.num_points, args.fscore_threshold) for obj in range(count)]
            settings = {"refinement_steps": args.refinement_steps, "refinement_lr": args.refinement_lr}
            result["refined"] = {**settings, "seconds": refined.metadata["refinement_seconds"], **average(rows)}
    return result


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


def trilinear_logits(probabilities: torch.Tensor):
    """Logits of the trilinear interpolation of an ``[x, y, z]`` probability grid over the cube, twice
    differentiable in the points (refinement's normal term needs a double backward, which ``grid_sample`` 3-D lacks
    in the GPU image's PyTorch 2.11: ``core/trilinear.py``)."""
    volume = probabilities.detach().cpu().float()  # on the CPU, as refined_variants's meshes

    def logits(points: torch.Tensor) -> torch.Tensor:
        value = trilinear_interpolate(volume, points.to(volume), HALF)
        return torch.logit(value.clamp(1e-4, 1 - 1e-4))

    return logits


def fitted_network(probabilities: torch.Tensor, outputs, obj: int, args):
    """A DVR decoder (unconditioned, ReLU, the pipeline's network) fitted by BCE to a probability grid.

    A stand-in for a trained network's field: points half uniform in the cube, half within ~0.01 of the object's
    ``pointcloud.npz``; targets the grid's trilinear probability there. Returns the logit function and fit stats.
    """
    from bts_studio.methods.dvr.networks import DVRDecoder

    torch.manual_seed(obj)
    decoder = DVRDecoder(0, args.network_width, 5, 1)
    target = trilinear_logits(probabilities)
    surface = torch.from_numpy(load_pointcloud(Path(outputs.metadata["pointcloud_filenames"][obj]),
                                               outputs.metadata["object_to_world"].numpy())[0]).float()  # fmt: skip
    optimizer = torch.optim.Adam(decoder.parameters(), lr=args.network_lr)
    start, batch = time.perf_counter(), 4096
    for _ in range(args.network_steps):
        near = surface[torch.randint(len(surface), (batch // 2,))] + 0.01 * torch.randn(batch // 2, 3)
        points = torch.cat([near, (torch.rand(batch - batch // 2, 3) - 0.5) * 2 * HALF])
        with torch.no_grad():
            labels = torch.sigmoid(target(points))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            decoder.occupancy(points[:, None], None)[:, 0], labels
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    decoder.eval()
    for parameter in decoder.parameters():
        parameter.requires_grad_(False)
    fit = {"final_bce": float(loss), "fit_seconds": time.perf_counter() - start}
    return (lambda points: decoder.occupancy(points[:, None], None)[:, 0]), fit


def refined_variants(mesh, logits, args) -> Dict[str, object]:
    """``{"plain": mesh, "refined": mesh}`` with DVR's refinement settings (and ``--refinement-*`` overrides)."""
    variants: Dict[str, object] = {"plain": mesh}
    if len(mesh.faces):
        start = time.perf_counter()
        vertices = refine_mesh_vertices(
            torch.from_numpy(np.asarray(mesh.vertices, dtype=np.float32)),
            torch.from_numpy(np.asarray(mesh.faces, dtype=np.int64)),
            logits,
            steps=args.refinement_steps,
            lr=args.refinement_lr,
            generator=torch.Generator().manual_seed(0),
        )
        refined = mesh.copy()
        refined.vertices = vertices.numpy().astype(np.float64)
        refined.metadata["refinement_seconds"] = time.perf_counter() - start
        variants["refined"] = refined
    return variants


def normals(args) -> Dict:
    from scipy.ndimage import gaussian_filter

    parser = ShapeNetDVRDataParserConfig(data=args.data).setup()
    train, test = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("test")
    count = min(args.objects, test.metadata["num_instances"])
    hulls = object_hulls(test, args.resolution, "cpu")[:count]
    keys = ("normal_consistency", "chamfer_l1", "fscore")
    table: Dict[str, Dict[str, List[float]]] = {}
    fits: List[Dict[str, float]] = []

    def add(name: str, mesh, obj: int) -> None:
        metrics = score(mesh, test, obj, args.num_points, args.fscore_threshold)
        row = table.setdefault(name, {key: [] for key in (*keys, "faces", "refinement_seconds")})
        for key in keys:
            row[key].append(metrics[key])
        row["faces"].append(len(mesh.faces))
        row["refinement_seconds"].append(mesh.metadata.get("refinement_seconds", 0.0))

    for obj, hull in enumerate(hulls):
        smooth = torch.from_numpy(gaussian_filter(hull.numpy(), args.smooth)) if args.smooth > 0 else hull
        if args.field == "network":
            logits, fit = fitted_network(smooth, test, obj, args)
            fits.append(fit)
        else:
            logits = trilinear_logits(smooth)
        for resolution in (64, 256):
            # MISE as the pipeline runs it (32^3 + 3 doublings for 256^3); 64^3 is one dense level.
            level0, doublings = (64, 0) if resolution == 64 else (32, 3)
            values = mise_grid(logits, HALF, level0, doublings, 0.0, batch_points=1 << 16)
            for kind, mesh in refined_variants(grid_to_mesh(values, HALF, 0.0), logits, args).items():
                add(f"{args.field} field, marching cubes {resolution}^3, {kind}", mesh, obj)
    # The mean training shape (gpu_dvr.sh's baseline: mean of the training hulls at 64^3), refined on its own
    # trilinear field, against the same test objects.
    mean = torch.stack(object_hulls(train, 64, "cpu")).mean(dim=0)
    for kind, mesh in refined_variants(grid_to_mesh(mean, HALF, 0.5), trilinear_logits(mean), args).items():
        for obj in range(count):
            add(f"mean training shape 64^3, {kind}", mesh, obj)
    rows = {name: {key: float(np.mean(values)) for key, values in row.items()} for name, row in table.items()}
    return {"measurement": "normal consistency of marching cubes at 64^3 / 256^3 with and without DVR's refinement",
            "field": f"visual hull of each test object's {len(test.cameras) // test.metadata['num_instances']} "
                     f"views at {args.resolution}^3, Gaussian sigma {args.smooth} voxels, "
                     + ("trilinear" if args.field == "hull" else
                        f"fitted by a DVR decoder (width {args.network_width}, {args.network_steps} Adam steps)"),
            "network_fits": fits,
            "refinement_steps": args.refinement_steps, "refinement_lr": args.refinement_lr,
            "num_test_objects": count, "rows": rows}  # fmt: skip


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
    parser.add_argument("mode", choices=["mean-shape", "visual-hull", "normals", "render"])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mesh", type=Path, help="mesh to write (baselines) or to draw (render)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--num-points", type=int, default=100_000)
    parser.add_argument("--fscore-threshold", type=float, default=0.01)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-faces", type=int, default=200_000)
    parser.add_argument("--dpi", type=int, default=100)
    parser.add_argument("--objects", type=int, default=2, help="normals: test objects measured")
    parser.add_argument("--smooth", type=float, default=1.0, help="normals: Gaussian sigma of the hull, in voxels")
    parser.add_argument(
        "--refinement-steps", type=int, default=None, help="DVR's vertex refinement: normals 30 (DVR's), mean-shape 0"
    )
    parser.add_argument("--refinement-lr", type=float, default=1e-5, help="DVR's 1e-5")
    parser.add_argument("--field", choices=["hull", "network"], default="hull", help="normals: the stand-in field")
    parser.add_argument("--network-width", type=int, default=128, help="normals --field network: decoder width")
    parser.add_argument("--network-steps", type=int, default=1500, help="normals --field network: Adam steps")
    parser.add_argument("--network-lr", type=float, default=1e-3, help="normals --field network: Adam lr")
    args = parser.parse_args()
    if args.mode == "render":
        render(args)
        return
    if args.refinement_steps is None:
        args.refinement_steps = 30 if args.mode == "normals" else 0
    result = {"mean-shape": mean_shape, "visual-hull": visual_hull, "normals": normals}[args.mode](args)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
