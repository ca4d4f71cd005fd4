"""``bts-studio import-official``: turn an official BTS KITTI-360 checkpoint into a bts-density run directory.

The official checkpoint (``download_checkpoint.sh kitti-360`` -> ``training-checkpoint.pt``) is an ignite dict
whose ``"model"`` entry is the state dict of ``BTSWrapper``: the network sits under ``renderer.net.``. Our module
names mirror it (``encoder.py``, ``density_field.py``), so the mapping is a prefix change plus dropped keys::

    renderer.net.encoder.encoder.encoder.*      -> net.encoder.encoder.encoder.*   (ResNet; ``fc.*`` dropped)
    renderer.net.encoder.decoder.decoder.0-10.* -> net.encoder.decoder.decoder.0-10.*  (11-13: unused heads, dropped)
    renderer.net.mlp_coarse.lin_in/lin_out.*    -> net.mlp_coarse.lin_in/lin_out.*
    renderer.net.code_xyz._freqs/_phases, renderer.renderer.* -> dropped (buffers our code recomputes)

The result is ``OUT/<experiment>/bts-density/official/{config.yml, nerfstudio_models/step-*.ckpt}``; ``ns-eval``,
``ns-render`` and ``ns-viewer`` take that config.yml, and ``ns-train bts-density --load-dir`` fine-tunes it.
"""

import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch
import tyro

OFFICIAL_PREFIX = "renderer.net."
DROPPED_PATTERNS = (
    r"^encoder\.encoder\.encoder\.fc\.",  # ImageNet classifier, unused
    r"^encoder\.decoder\.decoder\.(11|12|13)\.",  # heads of scales 1-3; prediction_mode 'default' uses scale 0
    r"^code_xyz\.",  # positional-encoding buffers (frequencies 1.5 * 2^k), recomputed
)


@dataclass
class ImportOfficialConfig:
    """Convert an official Behind-the-Scenes KITTI-360 checkpoint into a nerfstudio run directory."""

    checkpoint: tyro.conf.Positional[Path]
    """Official checkpoint (training-checkpoint.pt from BTS's download_checkpoint.sh kitti-360)."""
    output: tyro.conf.Positional[Path]
    """Output folder (nerfstudio's --output-dir); the run lands in OUTPUT/<experiment>/bts-density/official."""
    data: Path = Path("data/KITTI-360")
    """KITTI-360 root that ns-eval / ns-render of the imported run will read (written into config.yml)."""
    experiment_name: Optional[str] = None
    """Experiment folder name; default: the data folder's name, as ns-train names it."""
    allow_pickle: bool = False
    """Load with torch.load(weights_only=False). Only for checkpoints you trust (it can run code)."""
    overwrite: bool = False
    """Replace an existing imported run."""


def read_official_checkpoint(path: Path, allow_pickle: bool = False) -> Tuple[Dict[str, torch.Tensor], int]:
    """The network state dict of an official checkpoint (its ``"model"`` entry, or a bare state dict) and the
    training iteration recorded by ignite (0 when absent)."""
    if not path.is_file():
        raise SystemExit(f"import-official: {path} not found (BTS's download_checkpoint.sh kitti-360 fetches it)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as error:
        hint = "" if allow_pickle else " If you trust the file, retry with --allow-pickle."
        raise SystemExit(f"import-official: cannot read {path} ({type(error).__name__}: {error}).{hint}") from error
    state = loaded.get("model", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict) or not any(key.startswith(OFFICIAL_PREFIX) for key in state):
        raise SystemExit(
            f"import-official: {path} holds no BTS network weights (expected keys '{OFFICIAL_PREFIX}*' "
            "under 'model', as in BTS's training-checkpoint.pt)"
        )
    trainer_state = loaded.get("trainer", {}) if isinstance(loaded, dict) else {}
    step = int(trainer_state.get("iteration", 0)) if isinstance(trainer_state, dict) else 0
    return state, step


def map_official_state(state: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """Official ``renderer.net.*`` keys -> our model's ``net.*`` keys; returns the mapped dict and dropped keys."""
    mapped, dropped = {}, []
    for key, value in state.items():
        if not key.startswith(OFFICIAL_PREFIX):
            dropped.append(key)
            continue
        name = key[len(OFFICIAL_PREFIX) :]
        if any(re.match(pattern, name) for pattern in DROPPED_PATTERNS):
            dropped.append(key)
            continue
        mapped[f"net.{name}"] = value
    return mapped, dropped


def resnet_depth(state: Dict[str, torch.Tensor]) -> int:
    """ResNet depth of an official encoder: 50 has bottleneck blocks (conv3), 18 and 34 differ in layer3 blocks."""
    prefix = f"{OFFICIAL_PREFIX}encoder.encoder.encoder."
    if f"{prefix}layer1.0.conv3.weight" in state:
        return 50
    blocks = {k[len(prefix) :].split(".")[1] for k in state if k.startswith(f"{prefix}layer3.")}
    return 34 if len(blocks) == 6 else 18


def build_model_state(state: Dict[str, torch.Tensor]):
    """A BTSModel config and a complete model state dict filled with the official weights (checked key by key)."""
    from nerfstudio.data.scene_box import SceneBox

    from bts_studio.methods.bts.model import BTSModelConfig

    model_config = BTSModelConfig(resnet_layers=resnet_depth(state), search_torch_hub_cache=False)  # type: ignore[arg-type]
    feature_dim = state[f"{OFFICIAL_PREFIX}mlp_coarse.lin_in.weight"].shape[1] - 39
    model_config.feature_dim = int(feature_dim)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the "no ImageNet weights" warning: the official weights replace them
        model = model_config.setup(scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=0)
    mapped, dropped = map_official_state(state)
    target = model.state_dict()
    missing = sorted(set(target) - set(mapped) - {"device_indicator_param"})
    unexpected = sorted(set(mapped) - set(target))
    wrong_shape = sorted(k for k in mapped if k in target and mapped[k].shape != target[k].shape)
    if missing or unexpected or wrong_shape:
        raise SystemExit(
            "import-official: the checkpoint does not match the BTS KITTI-360 architecture: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shapes {wrong_shape[:5]}"
        )
    target.update(mapped)
    return model_config, target, dropped


def _save_atomically(payload, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    torch.save(payload, temporary)
    os.replace(temporary, path)


def import_official(config: ImportOfficialConfig) -> Path:
    """Write the run directory; returns its config.yml."""
    from bts_studio.methods.bts.method_config import bts_density_config

    state, step = read_official_checkpoint(config.checkpoint, config.allow_pickle)
    model_config, model_state, dropped = build_model_state(state)

    trainer = bts_density_config()
    trainer.pipeline.model.resnet_layers = model_config.resnet_layers
    trainer.pipeline.model.feature_dim = model_config.feature_dim
    trainer.pipeline.datamanager.data = config.data
    trainer.output_dir = config.output
    trainer.experiment_name = config.experiment_name or config.data.name
    trainer.timestamp = "official"
    run_dir = trainer.get_base_dir()
    if run_dir.exists() and any(run_dir.iterdir()) and not config.overwrite:
        raise SystemExit(f"import-official: {run_dir} exists; pass --overwrite to replace it")
    checkpoint_dir = trainer.get_checkpoint_dir()
    if checkpoint_dir.exists():
        for old in checkpoint_dir.glob("step-*.ckpt"):
            old.unlink()
    payload = {
        "step": step,
        "pipeline": {f"_model.{key}": value for key, value in model_state.items()},
        "optimizers": {},
        "schedulers": {},
        "scalers": {},
    }
    _save_atomically(payload, checkpoint_dir / f"step-{step:09d}.ckpt")
    trainer.save_config()
    print(
        f"Imported {len(model_state)} tensors (dropped {len(dropped)} unused: ResNet fc, heads 1-3, buffers) "
        f"at step {step}.\nRun: ns-eval --load-config {run_dir / 'config.yml'} --output-path eval.json"
    )
    return run_dir / "config.yml"


def main(argv: List[str], prog: str = "bts-studio import-official") -> None:
    import_official(tyro.cli(ImportOfficialConfig, args=argv, prog=prog))
