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
    python benchmarks/dvr_baselines.py nc-breakdown --data DVR_ROOT --out nc.json --source mean-shape|visual-hull|mesh
        [--mesh 'meshes/test_{object}.ply' --frame object] [--objects 8] [--resolution 64] [--smooth 0]
        [--source run --load-config RUN/config.yml [--refinement-steps 0] [--mesh-upsampling-steps 3]]
        Where does normal consistency come from? Per test object, DVR's protocol (mesh_correspondences, the
        per-point terms mesh_metrics averages) split by ground-truth region: the GT normal's dominant axis in the
        object frame (up/down/front/back/left/right) and the generator's part (wheel, body, cabin, roof, ...; the
        instance is rebuilt from --seed/--class-name, skipped when it does not match the point cloud), for both
        directions (accuracy side: each mesh sample by its nearest GT point; completeness side: each GT point),
        and the accuracy side by distance to GT (near <= --fscore-threshold vs far). Sources: the mean training
        shape at --resolution, each test object's own visual hull (from its views, --smooth Gaussian voxels), or
        meshes on disk (e.g. `bts-studio export-mesh --object K --split test`; --frame object as it writes them),
        or a trained dvr run's meshes of the test objects (loaded once, ns-eval's extraction).
    python benchmarks/dvr_baselines.py render --mesh MESH.ply --out MESH.png
        Lambertian-shaded pictures of a mesh from two sides with its vertex colours (matplotlib, no OpenGL).

Everything works in the nerfstudio world of the shapenet-dvr-data dataparser (the z-up turned unit cube).
"""

import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from bts_studio.core.mesh_refinement import refine_mesh_vertices
from bts_studio.core.mise import grid_points, mise_grid
from bts_studio.core.trilinear import trilinear_interpolate
from bts_studio.core.visual_hull import visual_hull_occupancy
from bts_studio.data.shapenet.dvr_dataparser import ShapeNetDVRDataParserConfig
from bts_studio.data.shapenet.dvr_reader import load_pointcloud
from bts_studio.eval.meshes import grid_to_mesh, mesh_correspondences, mesh_metrics, write_mesh
from bts_studio.methods.common.cameras import cameras_to_opencv_w2c
from bts_studio.methods.dvr.datamanager import read_mask

HALF = 0.5


def object_hulls(outputs, resolution: int, device: str, count: Optional[int] = None) -> List[torch.Tensor]:
    """Visual-hull occupancy grids ``[R+1]^3`` (float) of every object of a parsed split (the first ``count``)."""
    points = grid_points(resolution, HALF, device).reshape(-1, 3)
    instance = outputs.cameras.metadata["instance_idx"].reshape(-1)
    K, w2c = cameras_to_opencv_w2c(outputs.cameras)
    masks = outputs.metadata["mask_filenames"]
    grids = []
    for obj in range(int(instance.max()) + 1 if count is None else count):
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


AXIS_REGIONS = ("front", "back", "up", "down", "left", "right")
"""Dominant-axis regions of a GT normal in DVR's object frame (y up, the generated cars drive along +x, so +z is
the car's right; shapenet_objects.place): +x, -x, +y, -y, -z, +z."""


def axis_regions(normals: np.ndarray) -> np.ndarray:
    """``[P]`` indices into :data:`AXIS_REGIONS` of object-frame normals ``[P, 3]`` by their largest component."""
    axis = np.abs(normals).argmax(axis=1)
    positive = normals[np.arange(len(normals)), axis] > 0
    # (axis, positive) -> region: x+ front, x- back, y+ up, y- down, z- left, z+ right.
    table = np.array([[1, 0], [3, 2], [4, 5]])
    return table[axis, positive.astype(int)]


def part_regions(pointcloud: Path, points: np.ndarray, normals: np.ndarray, seed: int, class_name: str):
    """``(labels [P] into names, names)`` of the generator's part each object-frame GT point lies on, or None.

    The instance is rebuilt as ``synth-shapenet`` built it (``canonical_instance(seed, class, number)`` placed in
    the DVR frame; ``number`` from the folder name's place in ``instance_names`` over train, val and test); a GT
    point belongs to the first part that contains it after a 2e-3 step inwards. None when the data were not
    generated with these settings (more than 5 % of the points on no part).
    """
    from bts_studio.data.synthetic.primitives import Scene
    from bts_studio.data.synthetic.shapenet_cli import canonical_instance
    from bts_studio.data.synthetic.shapenet_objects import instance_names, place

    object_dir = pointcloud.parent
    lists = [object_dir.parent / f"{split}.lst" for split in ("train", "val", "test")]
    total = sum(len(path.read_text().split()) for path in lists if path.is_file()) or 4096
    names = instance_names(class_name, total, seed)
    if object_dir.name not in names:
        return None
    instance = place(canonical_instance(seed, class_name, names.index(object_dir.name))[0], "dvr")
    inner = torch.from_numpy(points.astype(np.float64) - 2e-3 * normals.astype(np.float64))
    part_names = sorted({part.label for part in instance.parts})
    labels = np.full(len(points), len(part_names), dtype=np.int64)  # len(part_names): on no part
    for part in instance.parts:
        inside = Scene((part,), origin=(0.0, 0.0, 0.0)).occupied(inner).numpy() & (labels == len(part_names))
        labels[inside] = part_names.index(part.label)
    if (labels == len(part_names)).mean() > 0.05:
        return None
    return labels, [*part_names, "none"]


def region_rows(dots: np.ndarray, labels: np.ndarray, names, distances: np.ndarray) -> Dict[str, Dict[str, float]]:
    """Per region: share of the points, mean ``|n . n'|``, mean distance and ``deficit`` = share x (1 - NC), the
    region's part of ``1 - NC`` of that direction (the deficits of all regions add up to it)."""
    rows = {}
    for index, name in enumerate(names):
        chosen = labels == index
        if chosen.any():
            share, nc = float(chosen.mean()), float(dots[chosen].mean())
            rows[name] = {"share": share, "nc": nc, "deficit": share * (1 - nc),
                          "distance": float(distances[chosen].mean())}  # fmt: skip
    return rows


def nc_breakdown_object(mesh, outputs, obj: int, args) -> Dict:
    """One object's normal-consistency breakdown (see the module docstring, ``nc-breakdown``)."""
    path = Path(outputs.metadata["pointcloud_filenames"][obj])
    local_points, local_normals = load_pointcloud(path)
    transform = outputs.metadata["object_to_world"].numpy()
    points, normals = load_pointcloud(path, transform)
    metrics = mesh_metrics(mesh, points, normals, args.num_points, args.fscore_threshold)
    found = mesh_correspondences(mesh, points, normals, args.num_points)
    result: Dict = {"object": obj, "name": path.parent.name, "faces": len(mesh.faces), "metrics": metrics}
    if found is None:
        return result
    accuracy, completeness = found["accuracy_normals"], found["completeness_normals"]
    result["accuracy_nc"], result["completeness_nc"] = float(accuracy.mean()), float(completeness.mean())
    groups = {"axis": (axis_regions(local_normals), list(AXIS_REGIONS))}
    parts = part_regions(path, local_points, local_normals, args.seed, args.class_name)
    if parts is not None:
        groups["part"] = parts
    for group, (labels, names) in groups.items():
        result[group] = {
            "accuracy": region_rows(accuracy, labels[found["gt_index"]], names, found["to_gt"]),
            "completeness": region_rows(completeness, labels, names, found["to_pred"]),
        }
    near = (found["to_gt"] <= args.fscore_threshold).astype(np.int64)
    result["accuracy_by_distance"] = region_rows(accuracy, near, ["far", "near"], found["to_gt"])
    # How axis-aligned the mesh is: the share of mesh samples whose normal is within ~18 deg of an axis.
    result["mesh_axis_aligned_share"] = float((np.abs(found["normals"]).max(axis=1) > 0.95).mean())
    return result


def average_breakdown(rows: List[Dict]) -> Dict:
    """The per-object breakdowns averaged over objects (a region missing on an object counts as share 0)."""
    mean = {key: float(np.mean([row["metrics"][key] for row in rows]))
            for key in ("normal_consistency", "chamfer_l1", "fscore")}  # fmt: skip
    scored = [row for row in rows if "accuracy_nc" in row]  # empty meshes have no per-point terms
    if not scored:
        return mean
    for key in ("accuracy_nc", "completeness_nc", "mesh_axis_aligned_share"):
        mean[key] = float(np.mean([row[key] for row in scored]))
    for group in ("axis", "part"):
        with_group = [row[group] for row in scored if group in row]
        if not with_group:
            continue
        mean[group] = {}
        for side in ("accuracy", "completeness"):
            names = sorted({name for row in with_group for name in row[side]})
            table = {}
            for name in names:
                present = [row[side][name] for row in with_group if name in row[side]]
                table[name] = {
                    "share": float(np.sum([entry["share"] for entry in present]) / len(with_group)),
                    "nc": float(np.mean([entry["nc"] for entry in present])),
                    "deficit": float(np.sum([entry["deficit"] for entry in present]) / len(with_group)),
                    "distance": float(np.mean([entry["distance"] for entry in present])),
                }
            mean[group][side] = table
    by_distance = [row["accuracy_by_distance"] for row in scored]
    mean["accuracy_by_distance"] = {
        name: {key: float(np.sum([row[name][key] for row in by_distance if name in row]) / len(by_distance))
               for key in ("share", "deficit")}
        for name in ("near", "far")
    }  # fmt: skip
    return mean


def run_meshes(args, count: int) -> List:
    """Meshes of test objects ``0..count-1`` of a trained dvr run (``--load-config``), as ``ns-eval`` extracts them
    (``DVRPipeline.extract_mesh`` from input view 0's code, nerfstudio world); ``--mesh-resolution-0``,
    ``--mesh-upsampling-steps`` and ``--refinement-steps`` override the run's settings. Written to ``--mesh``
    (``{object}`` in the path) when given."""
    from nerfstudio.utils.eval_utils import eval_setup

    from bts_studio.methods.dvr.datamanager import SPLIT_CODES
    from bts_studio.methods.dvr.pipeline import DVRPipeline

    if args.load_config is None or not args.load_config.is_file():
        raise SystemExit(
            f"nc-breakdown --source run needs --load-config (a dvr run's config.yml), got {args.load_config}"
        )
    _, pipeline, _, _ = eval_setup(args.load_config, test_mode="test")
    if not isinstance(pipeline, DVRPipeline):
        raise SystemExit(f"{args.load_config} is a {type(pipeline).__name__} run; nc-breakdown needs a dvr run")
    overrides = {"resolution_0": args.mesh_resolution_0, "upsampling_steps": args.mesh_upsampling_steps,
                 "refinement_steps": args.refinement_steps}  # fmt: skip
    for name, value in overrides.items():
        if value is not None:
            setattr(pipeline.config.mesh, name, value)
    meshes = []
    for obj in range(count):
        code = pipeline.code_for(SPLIT_CODES["test"], obj) if pipeline.model.encoder is not None else None
        meshes.append(pipeline.extract_mesh(code))
        if args.mesh is not None:
            write_mesh(meshes[-1], Path(str(args.mesh).format(object=obj)), overwrite=True)
    return meshes


def nc_breakdown(args) -> Dict:
    import trimesh

    parser = ShapeNetDVRDataParserConfig(data=args.data).setup()
    test = parser.get_dataparser_outputs("test")
    count = min(args.objects, test.metadata["num_instances"])
    transform = test.metadata["object_to_world"].numpy()
    if args.source == "mean-shape":
        mean = torch.stack(object_hulls(parser.get_dataparser_outputs("train"), args.resolution, args.device))
        shared = grid_to_mesh(mean.mean(dim=0), HALF, 0.5)
        meshes = [shared] * count
        described = f"mean training shape (mean visual hull of the training objects) at {args.resolution}^3"
    elif args.source == "visual-hull":
        from scipy.ndimage import gaussian_filter

        hulls = object_hulls(test, args.resolution, args.device, count)
        if args.smooth > 0:
            hulls = [torch.from_numpy(gaussian_filter(hull.cpu().numpy(), args.smooth)) for hull in hulls]
        meshes = [grid_to_mesh(hull, HALF, 0.5) for hull in hulls]
        views = len(test.cameras) // test.metadata["num_instances"]
        described = f"each object's own visual hull ({views} views) at {args.resolution}^3, smooth {args.smooth}"
    elif args.source == "run":
        meshes = run_meshes(args, count)
        described = f"trained run {args.load_config}, MISE + {args.refinement_steps} refinement steps (None: the run's)"
    else:
        if args.mesh is None or "{object}" not in str(args.mesh):
            raise SystemExit(
                "nc-breakdown --source mesh needs --mesh with '{object}' in the path, e.g. car_{object}.ply"
            )
        meshes = []
        for obj in range(count):
            path = Path(str(args.mesh).format(object=obj))
            if not path.is_file():
                raise SystemExit(
                    f"{path}: no such mesh (expected one mesh per test object, '{{object}}' = 0..{count - 1})"
                )
            mesh = trimesh.load(path, process=False, force="mesh")
            if args.frame == "object" and len(mesh.vertices):  # into the nerfstudio world the metrics use
                mesh.vertices = np.asarray(mesh.vertices) @ transform[:3, :3].T + transform[:3, 3]
            meshes.append(mesh)
        described = f"meshes {args.mesh} ({args.frame} frame)"
    rows = [nc_breakdown_object(mesh, test, obj, args) for obj, mesh in enumerate(meshes)]
    return {"measurement": "normal consistency split by ground-truth region (DVR's protocol, mesh_correspondences)",
            "source": described, "num_points": args.num_points, "num_test_objects": count,
            "mean": average_breakdown(rows), "objects": rows}  # fmt: skip


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
    parser.add_argument("mode", choices=["mean-shape", "visual-hull", "normals", "nc-breakdown", "render"])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--mesh", type=Path, help="mesh to write (baselines) or to draw (render)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--num-points", type=int, default=100_000)
    parser.add_argument("--fscore-threshold", type=float, default=0.01)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-faces", type=int, default=200_000)
    parser.add_argument("--dpi", type=int, default=100)
    parser.add_argument("--objects", type=int, default=2, help="normals, nc-breakdown: test objects")
    parser.add_argument("--smooth", type=float, default=1.0, help="normals: Gaussian sigma of the hull, in voxels")
    parser.add_argument(
        "--refinement-steps", type=int, default=None, help="DVR's vertex refinement: normals 30 (DVR's), mean-shape 0"
    )
    parser.add_argument("--refinement-lr", type=float, default=1e-5, help="DVR's 1e-5")
    parser.add_argument("--field", choices=["hull", "network"], default="hull", help="normals: the stand-in field")
    parser.add_argument("--network-width", type=int, default=128, help="normals --field network: decoder width")
    parser.add_argument("--network-steps", type=int, default=1500, help="normals --field network: Adam steps")
    parser.add_argument("--network-lr", type=float, default=1e-3, help="normals --field network: Adam lr")
    parser.add_argument(
        "--source", choices=["mean-shape", "visual-hull", "mesh", "run"], default="mesh", help="nc-breakdown"
    )
    parser.add_argument("--load-config", type=Path, help="nc-breakdown --source run: a dvr run's config.yml")
    parser.add_argument("--mesh-resolution-0", type=int, help="nc-breakdown --source run: MISE's coarse grid")
    parser.add_argument("--mesh-upsampling-steps", type=int, help="nc-breakdown --source run: MISE's doublings")
    parser.add_argument("--frame", choices=["object", "world"], default="object", help="nc-breakdown: --mesh's frame")
    parser.add_argument("--seed", type=int, default=0, help="nc-breakdown: synth-shapenet's --seed (part labels)")
    parser.add_argument("--class-name", default="cars", help="nc-breakdown: synth-shapenet's class (part labels)")
    args = parser.parse_args()
    if args.mode == "render":
        render(args)
        return
    if args.refinement_steps is None and args.mode != "nc-breakdown":  # nc-breakdown --source run: the run's
        args.refinement_steps = 30 if args.mode == "normals" else 0
    modes = {"mean-shape": mean_shape, "visual-hull": visual_hull, "normals": normals, "nc-breakdown": nc_breakdown}
    result = modes[args.mode](args)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
