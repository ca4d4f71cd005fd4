"""bts-studio: a Nerfstudio plugin for learning 3D scenes from few or single images.

Importing the package registers the numpy types that nerfstudio 1.1.5 writes into its checkpoints
as safe globals for ``torch.load(weights_only=True)`` (the default from torch 2.6 on), so that
``ns-eval``, ``ns-render``, ``ns-viewer`` and ``--load-dir`` resume work without environment variables,
and installs the hook that ends commands on a user error with its message alone (``utils/errors.py``).
"""

from bts_studio.utils.checkpoints import register_checkpoint_safe_globals
from bts_studio.utils.errors import install_excepthook

__version__ = "0.1.0"

register_checkpoint_safe_globals()
install_excepthook()
