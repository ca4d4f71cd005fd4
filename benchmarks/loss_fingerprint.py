"""Loss fingerprint: the training losses of a short CPU run at a fixed seed, through nerfstudio's trainer.

Refactors that must not change behaviour compare these numbers before and after (issue 12). The script
generates tiny data (the same generators and sizes as the end-to-end tests), builds the ``bts-density-tiny``,
``srn``, ``dvr-tiny``, ``dvr-combined-tiny`` (``dvr-combined`` at CPU size) and/or ``dvr-combined-sphere`` (the
same with a sphere added to the field, so that rays hit) presets with only data- and model-size overrides, seeds
everything with ``machine.seed`` exactly as ``ns-train`` does, runs ``--steps`` calls of ``Trainer.train_iteration``
and prints one line per step::

    python benchmarks/loss_fingerprint.py --steps 20 --methods bts-density-tiny srn [--work DIR] [--srn-start-std 0]

The last line per method (``<method> step 20 loss ...``) is the fingerprint. CPU only. Compare fingerprints taken
on the same machine at the same thread count: another CPU changes the last digits (``bts-density-tiny`` at commit
f4cb8d5: 0.0066894236952 on earlier sessions' machines, 0.0066893072799 on an AVX-512 one).
"""

import argparse
import os
import tempfile
from pathlib import Path
from typing import Optional

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def bts_config(work: Path):
    from bts_studio.data.synthetic.kitti360_cli import SynthKitti360Config, run
    from bts_studio.methods.bts.method_config import bts_density_tiny_config

    root = work / "KITTI-360"
    if not root.exists():
        run(SynthKitti360Config(out=root, frames=6, scale=0.06, seed=0, device="cpu"))
    config = bts_density_tiny_config()
    config.pipeline.datamanager.data = root
    dataparser = config.pipeline.datamanager.dataparser
    dataparser.target_height, dataparser.target_width, dataparser.test_every = 64, 160, 4
    config.pipeline.datamanager.groups_per_batch = 2
    config.pipeline.datamanager.rays_per_group = 128
    config.pipeline.model.num_samples = 16
    return config


def srn_config(work: Path):
    from bts_studio.data.shapenet.srn_dataparser import ShapeNetSRNDataParserConfig
    from bts_studio.methods.srn.method_config import srn_trainer_config

    out = work / "shapenet"
    if not out.exists():
        from bts_studio.data.synthetic.shapenet_cli import main as synth

        synth(
            [str(out), "--classes", "cars", "--instances", "4", "--val-instances", "1", "--test-instances", "1"]
            + ["--format", "srn", "--resolution", "32", "--train-views", "8", "--test-views", "8"]
        )
    config = srn_trainer_config()
    config.pipeline.datamanager.data = out / "srn_cars"
    config.pipeline.datamanager.dataparser = ShapeNetSRNDataParserConfig(few_shot_views=(0,))
    config.pipeline.datamanager.instances_per_batch = 3
    config.pipeline.datamanager.rays_per_instance = 64
    # 8-view test instances have no view 64: condition few-shot evaluation on views they have (checked at start-up).
    config.pipeline.few_shot.input_views = (0, 1)
    return config


def dvr_data(work: Path) -> Path:
    out = work / "dvr_shapenet"
    if not out.exists():
        from bts_studio.data.synthetic.shapenet_cli import main as synth

        synth(
            [str(out), "--classes", "cars", "--instances", "6", "--val-instances", "1", "--test-instances", "1"]
            + ["--format", "dvr", "--resolution", "32", "--dvr-views", "4", "--pointcloud-points", "2000"]
            + ["--dvr-input-views", "2", "--dvr-input-resolution", "32"]
        )
    return out / "dvr"


def dvr_tiny_config(work: Path):
    from bts_studio.methods.dvr.method_config import dvr_tiny_trainer_config

    config = dvr_tiny_trainer_config()
    config.pipeline.datamanager.data = dvr_data(work)
    return config


def dvr_combined_tiny_config(work: Path):
    """``dvr-combined`` (RGB + depth + masks: every loss term, occupancy points at the true depth) at CPU size."""
    from bts_studio.methods.dvr.method_config import dvr_combined_trainer_config

    config = dvr_combined_trainer_config()
    config.pipeline.datamanager.data = dvr_data(work)
    model = config.pipeline.model
    model.latent_dim, model.hidden_size, model.num_blocks, model.initial_proposals = 16, 32, 2, 8
    datamanager = config.pipeline.datamanager
    datamanager.images_per_batch, datamanager.rays_per_image, datamanager.input_image_size = 4, 128, 32
    return config


def add_sphere(trainer) -> None:
    """``dvr-combined-sphere``: a sphere of radius 0.3 added to the field's logits, so that from step 1 most object
    rays hit and every term (RGB, depth, normals, secant search, analytic gradient) enters the losses."""
    model = trainer.pipeline.model
    network = model.occupancy
    model.occupancy = lambda points, latent: network(points, latent) + 40 * (0.3 - points.norm(dim=-1))


BUILDERS = {
    "bts-density-tiny": bts_config,
    "srn": srn_config,
    "dvr-tiny": dvr_tiny_config,
    "dvr-combined-tiny": dvr_combined_tiny_config,
    "dvr-combined-sphere": dvr_combined_tiny_config,
}
AFTER_SETUP = {"dvr-combined-sphere": add_sphere}


def set_up_trainer(config, steps: int, work: Path, device_type: str):
    """``config``'s trainer, set up for ``steps`` steps under ``work`` on ``device_type`` (tensorboard, no viewer),
    seeded as nerfstudio's ``train_loop`` seeds."""
    from nerfstudio.scripts.train import _set_random_seed

    config.set_timestamp()
    config.machine.device_type = device_type
    config.vis = "tensorboard"
    config.output_dir = work / "runs"
    config.max_num_iterations = steps
    config.viewer.quit_on_train_completion = True
    _set_random_seed(config.machine.seed)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def tiny_trainer(name: str, steps: int, work: Path, configure=None):
    """The set-up trainer of method ``name`` (a key of ``BUILDERS``) for ``steps`` CPU steps under ``work``, seeded
    as nerfstudio's ``train_loop`` seeds; ``configure(config)`` edits the config first (also used by
    ``ns_step_breakdown.py``)."""
    config = BUILDERS[name](work)
    if configure is not None:
        configure(config)
    trainer = set_up_trainer(config, steps, work, "cpu")
    if name in AFTER_SETUP:
        AFTER_SETUP[name](trainer)
    return trainer


def run_method(name: str, steps: int, work: Path, srn_start_std: Optional[float] = None) -> list:
    import torch

    def configure(config) -> None:
        if name == "srn" and srn_start_std is not None:
            # SRN jitters the marcher's start depth with one normal draw per ray; 0 takes the draw order out of the
            # comparison when a change reorders the rays of a batch.
            config.pipeline.model.initial_z_std = srn_start_std

    trainer = tiny_trainer(name, steps, work, configure)
    rows = []
    for step in range(steps):
        loss, loss_dict, _ = trainer.train_iteration(step)
        terms = " ".join(f"{k}={float(v):.11g}" for k, v in sorted(loss_dict.items()))
        rows.append(float(loss))
        print(f"{name} step {step + 1} loss {float(loss):.11g} {terms}", flush=True)
    torch.set_grad_enabled(True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--methods", nargs="+", default=list(BUILDERS), choices=list(BUILDERS))
    parser.add_argument("--work", type=Path, default=None, help="data and run folder (default: a temporary one)")
    parser.add_argument("--srn-start-std", type=float, default=None, help="override srn's initial_z_std (e.g. 0)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="loss_fingerprint_"))
    work.mkdir(parents=True, exist_ok=True)
    for name in args.methods:
        run_method(name, args.steps, work, args.srn_start_std)


if __name__ == "__main__":
    main()
