"""Load a trained bts-density model for prediction on new images: weights only, no dataset.

``ns-eval`` and the occupancy tools set up the whole pipeline, which reads the training data. A person with a
run folder (or only its checkpoint) and their own photos has no dataset, so this builds the model from the run's
``config.yml`` and copies the ``_model.*`` tensors of the newest checkpoint in, as nerfstudio's
``Pipeline.load_state_dict`` does. The training image size comes from the run's dataparser config
(``target_height`` x ``target_width``); the training intrinsics from the run's KITTI-360 calibration when that
data is still on disk, else from KITTI-360's published perspective camera.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from bts_studio.eval.predict_intrinsics import TrainingCamera, kitti360_training_camera
from bts_studio.methods.bts.model import BTSModel, BTSModelConfig

DEFAULT_TRAINING_SIZE = (192, 640)
"""BTS's KITTI-360 training size (height, width), used for a bare checkpoint without --training-size."""


@dataclass
class LoadedModel:
    model: BTSModel
    training: TrainingCamera
    method_name: str
    checkpoint: Path
    step: int


def newest_checkpoint(folder: Path) -> Path:
    checkpoints = sorted(Path(folder).glob("step-*.ckpt"))
    if not checkpoints:
        raise SystemExit(f"no step-*.ckpt checkpoint in {folder}; train the run first (ns-train bts-density ...)")
    return checkpoints[-1]


def _read_config(path: Path) -> Any:
    import yaml

    import bts_studio  # noqa: F401  (registers the classes a config.yml names)

    if not path.is_file():
        raise SystemExit(f"{path}: config file not found (pass a run's config.yml to --load-config)")
    config = yaml.load(path.read_text(), Loader=yaml.Loader)
    model_config = getattr(getattr(config, "pipeline", None), "model", None)
    if not isinstance(model_config, BTSModelConfig):
        raise SystemExit(
            f"{path}: not a bts-density run (its model is {type(model_config).__name__}); predict needs a run of "
            "bts-density or bts-density-tiny"
        )
    return config


def _model_state(checkpoint: Path) -> Tuple[Dict[str, torch.Tensor], int]:
    try:
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure to read is the same user error
        raise SystemExit(
            f"{checkpoint}: not a readable nerfstudio checkpoint ({type(error).__name__}: {error}). An official BTS "
            "checkpoint must be converted first: bts-studio import-official CKPT OUT"
        ) from error
    pipeline = payload.get("pipeline") if isinstance(payload, dict) else None
    if not isinstance(pipeline, dict):
        raise SystemExit(f"{checkpoint}: no 'pipeline' state; expected a checkpoint written by ns-train")
    state = {}
    for key, value in pipeline.items():
        if key.startswith("_model."):
            key = key[len("_model.") :]
            state[key[len("module.") :] if key.startswith("module.") else key] = value
    if not state:
        raise SystemExit(f"{checkpoint}: the pipeline state holds no model weights (_model.*)")
    return state, int(payload.get("step", 0))


def _build(model_config: BTSModelConfig, size: Tuple[int, int], device: torch.device) -> BTSModel:
    from nerfstudio.data.scene_box import SceneBox

    model_config.imagenet_weights = None  # the checkpoint replaces every weight; never look for ImageNet ones
    model_config.search_torch_hub_cache = False
    model = model_config.setup(
        scene_box=SceneBox(torch.tensor([[-1.0] * 3, [1.0] * 3])),
        num_train_data=0,
        metadata={"target_size": tuple(size)},
    )
    return model.to(device)


def _training_camera(config: Any, size: Tuple[int, int]) -> TrainingCamera:
    """The run's training intrinsics from its calibration when the data is still there, else KITTI-360's."""
    dataparser = config.pipeline.datamanager.dataparser
    data = getattr(config.pipeline.datamanager, "data", None) or getattr(dataparser, "data", None)
    if data is not None:
        try:
            from bts_studio.data.kitti360.rig import load_rig

            rig = load_rig(Path(data), size, 0.0, 0.0, with_fisheyes=False)
            return TrainingCamera(size, torch.from_numpy(rig.K.copy()), f"the run's calibration ({data})")
        except Exception:  # noqa: BLE001 - the data moved or is not KITTI-360: fall back below
            pass
    return kitti360_training_camera(size)


def load_model(
    load_config: Optional[Path] = None,
    checkpoint: Optional[Path] = None,
    training_size: Optional[Tuple[int, int]] = None,
    device: Optional[torch.device] = None,
) -> LoadedModel:
    """The model of a run's ``config.yml`` (newest checkpoint), or of a checkpoint (its run's config when the
    checkpoint sits in ``RUN/nerfstudio_models/``, else the default bts-density configuration).

    Raises:
        SystemExit: missing or unreadable config / checkpoint, or weights that do not fit the configuration.
    """
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if (load_config is None) == (checkpoint is None):
        raise SystemExit("pass exactly one of --load-config CONFIG.yml or --checkpoint CKPT")
    config = None
    if load_config is not None:
        config = _read_config(Path(load_config))
        checkpoint = newest_checkpoint(Path(load_config).parent / "nerfstudio_models")
    else:
        checkpoint = Path(checkpoint)
        if not checkpoint.is_file():
            raise SystemExit(f"{checkpoint}: checkpoint file not found")
        sibling = checkpoint.parent.parent / "config.yml"
        if sibling.is_file():
            config = _read_config(sibling)
    state, step = _model_state(checkpoint)
    if config is not None:
        model_config = config.pipeline.model
        dataparser = config.pipeline.datamanager.dataparser
        size = training_size or (
            int(getattr(dataparser, "target_height", DEFAULT_TRAINING_SIZE[0])),
            int(getattr(dataparser, "target_width", DEFAULT_TRAINING_SIZE[1])),
        )
        training = _training_camera(config, size)
        method = str(getattr(config, "method_name", "bts-density"))
    else:
        model_config = BTSModelConfig()
        size = training_size or DEFAULT_TRAINING_SIZE
        training = kitti360_training_camera(size)
        method = "bts-density"
        # the encoder depth is not recorded outside config.yml: ResNet-50 has bottleneck conv3 layers, 18 vs 34
        # differ in the number of blocks of layer3
        if not any(".conv3." in key for key in state):
            model_config.resnet_layers = 34 if any(".layer3.2." in key for key in state) else 18
        mlp_in = state.get("net.mlp_coarse.lin_in.weight")
        if mlp_in is not None:
            model_config.mlp_hidden_dim = int(mlp_in.shape[0])
    model = _build(model_config, size, device)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise SystemExit(
            f"{checkpoint}: weights do not fit the {method} configuration (missing {len(missing)}, e.g. "
            f"{missing[:2]}; unexpected {len(unexpected)}, e.g. {unexpected[:2]}); pass the run's --load-config"
        )
    model.eval()
    return LoadedModel(model, training, method, checkpoint, step)
