"""Checkpoint loading under torch >= 2.6.

nerfstudio 1.1.5 calls ``torch.load`` without ``weights_only=False``; since torch 2.6 that rejects the
numpy scalars its schedulers store in checkpoints ("Unsupported global: numpy.core.multiarray.scalar").
Registering those types as safe globals fixes every ns-* command, because every one of them imports
our entry-point modules (and so this package) before it loads a checkpoint.
"""

import numpy as np


def _numpy_checkpoint_globals() -> list:
    """The numpy objects that appear in nerfstudio checkpoints, for numpy 1.x and 2.x alike."""
    found = [np.dtype]
    found += [type(np.dtype(kind)) for kind in (np.float64, np.float32, np.int64, np.int32, np.bool_)]
    for module_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["scalar"])
        except ImportError:
            continue
        scalar = getattr(module, "scalar", None)
        if scalar is not None:
            found.append(scalar)
    return found


def register_checkpoint_safe_globals() -> None:
    """Allow ``torch.load(weights_only=True)`` to read nerfstudio 1.1.5 checkpoints. Safe to call twice."""
    import torch

    add_safe_globals = getattr(torch.serialization, "add_safe_globals", None)
    if add_safe_globals is not None:  # torch < 2.4 has no allow-list and needs none
        add_safe_globals(_numpy_checkpoint_globals())
