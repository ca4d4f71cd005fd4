"""The ``bts-studio`` command: one subcommand per tool, each imported only when it runs.

Each subcommand lives in its own module as a ``main(argv)`` function that parses its arguments with
tyro. Keeping the table below as strings means ``bts-studio --help`` stays fast and a broken optional
dependency of one tool cannot break the others.
"""

import importlib
import sys
from typing import Dict, List, Optional, Tuple

# name -> (module:function, one-line description). Add a tool by adding a row.
SUBCOMMANDS: Dict[str, Tuple[str, str]] = {
    "synth-kitti360": (
        "bts_studio.data.synthetic.kitti360_cli:main",
        "Generate a synthetic street sequence in the exact KITTI-360 on-disk format, with exact ground truth.",
    ),
    "synth-shapenet": (
        "bts_studio.data.synthetic.shapenet_cli:main",
        "Generate synthetic ShapeNet-like object classes in the SRN and/or DVR on-disk formats.",
    ),
    "synth-deepvoxels": (
        "bts_studio.data.synthetic.deepvoxels_cli:main",
        "Generate one object scene in DeepVoxels' on-disk layout (upper-hemisphere views, test spiral).",
    ),
    "import-official": (
        "bts_studio.methods.bts.import_official:main",
        "Convert an official Behind-the-Scenes KITTI-360 checkpoint into a nerfstudio run directory.",
    ),
    "eval-occupancy": (
        "bts_studio.eval.occupancy_cli:main",
        "Occupancy metrics (O_acc, IE_acc, IE_rec) of a trained bts-density run, as BTS measures them.",
    ),
    "render-bev": (
        "bts_studio.eval.bev_cli:main",
        "Render bird's-eye occupancy views (and a video) of a trained bts-density run.",
    ),
    "predict": (
        "bts_studio.eval.predict_cli:main",
        "Depth, bird's-eye occupancy, a fly-through and 3D exports of your own photos, folders or videos.",
    ),
    "camera-path": (
        "bts_studio.eval.camera_path_cli:main",
        "Write an ns-render camera path that starts exactly at one source view and drives on in its level frame.",
    ),
    "srn-interpolate": (
        "bts_studio.methods.srn.interpolate_cli:main",
        "Render the latent-code interpolation between two SRN instances while the camera turns.",
    ),
    "export-mesh": (
        "bts_studio.eval.export_mesh_cli:main",
        "Extract a coloured PLY/OBJ mesh from a trained dvr run (MISE + marching cubes).",
    ),
    "bench": (
        "bts_studio.bench:main",
        "Speed benchmarks; results belong in docs/benchmarks.md.",
    ),
}


def _print_help() -> None:
    print("usage: bts-studio COMMAND [ARGS...]   (bts-studio COMMAND --help for its options)\n")
    print("commands:")
    width = max(len(name) for name in SUBCOMMANDS)
    for name, (_, description) in SUBCOMMANDS.items():
        print(f"  {name:<{width}}  {description}")


def entrypoint(argv: Optional[List[str]] = None) -> None:
    """Dispatch ``bts-studio COMMAND ...`` to the command's module."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        _print_help()
        return
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        _print_help()
        raise SystemExit(f"\nbts-studio: unknown command {name!r}; choose one of: {', '.join(SUBCOMMANDS)}")
    target, _ = SUBCOMMANDS[name]
    module_name, function_name = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (error.name == module_name or module_name.startswith(error.name + ".")):
            raise SystemExit(f"bts-studio {name}: this command is not available in this version.") from error
        raise
    getattr(module, function_name)(rest, prog=f"bts-studio {name}")


if __name__ == "__main__":
    entrypoint()
