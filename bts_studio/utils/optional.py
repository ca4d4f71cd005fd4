"""Optional dependencies: imported where they are used, failing there with a message that says what to do.

Nothing under ``bts_studio`` imports these at module level, so a missing or broken one can never
break ``ns-train --help`` or any other ns-* command (nerfstudio loads plugin entry points unguarded).
"""

import importlib
from types import ModuleType

OPTIONAL_MODULES = ("skimage", "mediapy", "lpips", "trimesh", "mcubes")
"""Modules that bts-studio uses only inside the functions that need them (tests check this list)."""


class OptionalDependencyError(ImportError):
    """An optional dependency is missing or broken; the message names the feature and the fix."""


def import_optional(module_name: str, purpose: str, install_hint: str | None = None) -> ModuleType:
    """Import ``module_name`` for ``purpose``, or raise OptionalDependencyError explaining how to get it."""
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        hint = install_hint or f"pip install {module_name}"
        raise OptionalDependencyError(
            f"{purpose} needs the optional package {module_name!r}, which could not be imported ({error}). "
            f"Install it with: {hint}"
        ) from error
