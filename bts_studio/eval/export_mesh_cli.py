"""``bts-studio export-mesh``: the surface of a trained ``dvr`` run as a PLY/OBJ mesh with vertex colours.

MISE (``core/mise.py``: coarse 32^3, refined to 256^3 only near the surface, threshold 0.5) then marching
cubes (scikit-image), DVR's 30 vertex-refinement steps (``core/mesh_refinement.py``), vertex colours from the
RGB head. The conditioning image of single-view models is
``--source-image`` (any RGB image; resized to the encoder's input size, transparent pixels composited on
white), else the input view 0 of object ``--object`` of ``--split``. Vertices are written in the data's
object frame (``--frame object``, DVR's y-up unit cube) or in the nerfstudio world (``--frame world``).

Example::

    bts-studio export-mesh --load-config outputs/.../config.yml --source-image car.png --output car.ply
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Literal, Optional

import numpy as np
import torch
import tyro
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


@dataclass
class ExportMeshConfig:
    """Extract a coloured mesh from a trained dvr run."""

    load_config: Path
    """The run's ``config.yml`` (from ns-train)."""
    output: Path = Path("renders/dvr_mesh.ply")
    """Mesh file, ``.ply`` or ``.obj`` (vertex colours in both)."""
    source_image: Optional[Path] = None
    """Conditioning image for single-view models (None: input view 0 of --object in --split)."""
    object: int = 0
    """Object index in --split when no --source-image is given."""
    split: Literal["train", "test"] = "test"
    """Which split --object refers to."""
    resolution_0: Optional[int] = None
    """Coarse grid cells per side (None: the run's pipeline.mesh setting, 32 by default)."""
    upsampling_steps: Optional[int] = None
    """Grid doublings near the surface (None: the run's setting, 3 = 256^3)."""
    threshold: Optional[float] = None
    """Iso-level as an occupancy probability (None: the run's setting, 0.5)."""
    refinement_steps: Optional[int] = None
    """Vertex-refinement steps after marching cubes (None: the run's setting, DVR's 30; 0: off)."""
    frame: Literal["object", "world"] = "object"
    """Coordinates of the written vertices: the data's object frame or the nerfstudio world."""
    overwrite: bool = False
    """Replace an existing mesh file."""


def main(argv: List[str], prog: str = "bts-studio export-mesh") -> None:
    config = tyro.cli(ExportMeshConfig, args=argv, prog=prog)
    if config.output.suffix.lower() not in (".ply", ".obj"):
        raise SystemExit(f"--output {config.output}: the mesh file must end in .ply or .obj")
    if config.output.exists() and not config.overwrite:
        raise SystemExit(f"{config.output} exists; pass --overwrite to replace it")
    if config.source_image is not None:
        from bts_studio.data.checks import verify_image_file

        try:
            verify_image_file(config.source_image, "an RGB image (PNG or JPEG) of the object", ValueError)
        except ValueError as error:
            raise SystemExit(f"--source-image {error}") from None
    if not config.load_config.is_file():
        raise SystemExit(f"--load-config {config.load_config} does not exist (expected a run's config.yml)")
    # The mesh options, before the run is loaded (minutes for a large run): what MISE and the refinement accept.
    limits = {
        "resolution_0": (lambda v: v >= 1, "at least 1 cell per side"),
        "upsampling_steps": (lambda v: v >= 0, "0 or more doublings"),
        "threshold": (lambda v: 0.0 < v < 1.0, "an occupancy probability strictly between 0 and 1"),
        "refinement_steps": (lambda v: v >= 0, "0 (off) or more steps"),
    }
    for name, (ok, expected) in limits.items():
        value = getattr(config, name)
        if value is not None and not ok(value):
            raise SystemExit(f"--{name.replace('_', '-')} {value}: expected {expected}")

    from nerfstudio.utils.eval_utils import eval_setup

    from bts_studio.eval.meshes import write_mesh
    from bts_studio.methods.dvr.datamanager import SPLIT_CODES, read_rgb
    from bts_studio.methods.dvr.pipeline import DVRPipeline

    run_config, pipeline, _, _ = eval_setup(config.load_config, test_mode="test")
    if not isinstance(pipeline, DVRPipeline):
        raise SystemExit(f"{config.load_config} is a {type(pipeline).__name__} run; export-mesh needs a dvr run")
    for name in ("resolution_0", "upsampling_steps", "threshold", "refinement_steps"):
        if getattr(config, name) is not None:
            setattr(pipeline.config.mesh, name, getattr(config, name))
    code = None
    if pipeline.model.encoder is None and config.source_image is not None:
        print(
            f"note: --source-image {config.source_image} is ignored: this {run_config.method_name} run has no image "
            "encoder (one object fitted from many views)"
        )
    if pipeline.model.encoder is not None:
        if config.source_image is not None:
            size = pipeline.datamanager.config.input_image_size
            image = torch.from_numpy(read_rgb(config.source_image, size).copy()).permute(2, 0, 1)[None].float() / 255
            with torch.no_grad():
                pipeline.model.eval()
                code = pipeline.model.encode(image.to(pipeline.device))
        else:
            code = pipeline.code_for(SPLIT_CODES[config.split], config.object)
    steps = pipeline.config.mesh.upsampling_steps
    start = time.perf_counter()
    columns = [TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn()]
    with Progress(*columns) as progress:
        task = progress.add_task("MISE levels", total=steps + 1)
        refine_task = progress.add_task("vertex refinement", total=pipeline.config.mesh.refinement_steps)
        mesh = pipeline.extract_mesh(
            code,
            progress=lambda level, count: progress.advance(task),
            refinement_progress=lambda step: progress.advance(refine_task),
        )
    if config.frame == "object":
        rotation = pipeline.datamanager.train_dataparser_outputs.metadata.get("object_to_world")
        if rotation is not None and len(mesh.vertices):
            mesh.vertices = np.asarray(mesh.vertices) @ np.asarray(rotation)[:3, :3]  # world -> object: R^T p
    write_mesh(mesh, config.output, overwrite=config.overwrite)
    mesh_config = pipeline.config.mesh
    seconds = time.perf_counter() - start
    for line in mesh_report(mesh, config.output, mesh_config.refinement_steps, mesh_config.threshold, seconds):
        print(line)


def mesh_report(mesh, output: Path, refinement_steps: int, threshold: float, seconds: float) -> List[str]:
    """What export-mesh prints: the file, its size and the refinement steps run (none on an empty mesh), and for an
    empty mesh a warning saying so (an untrained run, or a threshold above every occupancy)."""
    faces = len(mesh.faces)
    lines = [
        f"wrote {output}: {len(mesh.vertices)} vertices, {faces} faces "
        f"({refinement_steps if faces else 0} refinement steps) in {seconds:.1f} s"
    ]
    if not faces:
        lines.append(
            f"warning: the surface is empty: no grid point's occupancy reaches the threshold {threshold} (an "
            "untrained or diverged run?); the file holds no faces. A lower --threshold may show a surface."
        )
    return lines
