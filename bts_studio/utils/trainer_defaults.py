"""Defaults every bts-studio method shares, so that a fresh ``ns-train`` behaves the same for each.

- ``vis`` is the viewer plus tensorboard, never wandb (nerfstudio's default, which needs a login);
- the device is detected (``cuda`` when available, else ``cpu``; nerfstudio 1.1.5 always says cuda);
- the viewer quits when training completes, so headless runs and scripts end;
- the trainer is ``bts_studio.utils.trainer.BTSStudioTrainer`` (atomic checkpoints, a resume that skips a damaged
  checkpoint, a stop on non-finite steps), set as ``TrainerConfig._target``.
"""

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig

from bts_studio.utils.trainer import BTSStudioTrainer

PLUGIN_TRAINER = BTSStudioTrainer
"""The ``TrainerConfig._target`` of every bts-studio method."""


def auto_device_type() -> str:
    """``cuda`` when a CUDA device is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def plugin_machine_config() -> MachineConfig:
    """A MachineConfig whose device type matches this machine."""
    return MachineConfig(device_type=auto_device_type())  # type: ignore[arg-type]


def plugin_viewer_config() -> ViewerConfig:
    """A ViewerConfig that lets ``ns-train`` exit when training is done."""
    return ViewerConfig(quit_on_train_completion=True)


PLUGIN_VIS = "viewer+tensorboard"
"""The default ``--vis`` of every bts-studio method."""
