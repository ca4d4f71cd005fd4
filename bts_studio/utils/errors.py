"""User errors end a command with their message, not a traceback.

Every ``ns-*`` command and ``bts-studio`` imports this package (nerfstudio's registry imports our entry-point
modules), and ``bts_studio/__init__.py`` calls :func:`install_excepthook`. The hook changes nothing for other
exceptions; for an uncaught :class:`bts_studio.data.checks.UserError` (bad data, a bad option, an unloadable
checkpoint, a non-finite training step) it prints only ``error: <message>`` and a line saying how to get the
traceback: set ``BTS_STUDIO_TRACEBACK=1``. The exit status stays 1. ``ns-train`` failing to create its output
folder (a file in the way, no permission) is reported the same way, naming ``--output-dir``.

nerfstudio is not patched: ``sys.excepthook`` is the interpreter's own mechanism, chained to the previous hook.
"""

import os
import sys
from pathlib import Path
from typing import Optional

TRACEBACK_VARIABLE = "BTS_STUDIO_TRACEBACK"
"""Set to 1 to see the traceback of user errors too."""


def _output_dir_problem(error: BaseException) -> Optional[str]:
    """A message for ``ns-train`` failing to create its output folder, else None."""
    if Path(sys.argv[0]).name != "ns-train" or not isinstance(error, OSError) or not error.filename:
        return None
    output_dir = "outputs"
    for index, argument in enumerate(sys.argv):
        if argument == "--output-dir" and index + 1 < len(sys.argv):
            output_dir = sys.argv[index + 1]
        elif argument.startswith("--output-dir="):
            output_dir = argument.split("=", 1)[1]
    filename = str(error.filename)
    if not (filename == output_dir or filename.startswith(output_dir.rstrip("/") + "/")):
        return None
    return f"cannot create the run folder {filename} ({error.strerror}). Choose another folder with --output-dir."


def user_message(error: BaseException) -> Optional[str]:
    """The message to show instead of a traceback, or None when the traceback should be shown."""
    from bts_studio.data.checks import UserError

    if os.environ.get(TRACEBACK_VARIABLE, "") not in ("", "0"):
        return None
    if isinstance(error, UserError):
        return str(error)
    return _output_dir_problem(error)


def install_excepthook() -> None:
    """Chain :func:`user_message` in front of the current ``sys.excepthook`` (idempotent)."""
    previous = sys.excepthook
    if getattr(previous, "_bts_studio", False):
        return

    def hook(kind, error, traceback) -> None:
        message = user_message(error)
        if message is None:
            previous(kind, error, traceback)
            return
        sys.stderr.write(f"\nerror: {message}\n(set {TRACEBACK_VARIABLE}=1 to see the traceback)\n")

    hook._bts_studio = True  # type: ignore[attr-defined]
    sys.excepthook = hook


UNSUPPORTED_EXPORTS = {
    "pointcloud": "it samples rays through nerfstudio's VanillaDataManager pixel sampler, which our frame-group/"
    "instance datamanagers replace",
    "poisson": "it samples rays through nerfstudio's VanillaDataManager pixel sampler, which our frame-group/"
    "instance datamanagers replace",
    "marching-cubes": "it needs an SDF field",
    "gaussian-splat": "it needs a splatfacto model",
}
"""``ns-export`` subcommands that cannot work on bts-studio pipelines, and why."""

SUPPORTED_EXPORTS = ("tsdf", "cameras")
"""``ns-export`` subcommands that work on bts-studio pipelines."""


def refuse_unsupported_export(method: str, argv: Optional[list] = None) -> None:
    """Called when a bts-studio pipeline is built: under ``ns-export <unsupported>`` raise a :class:`UserError`
    naming the supported exports, before the checkpoint is loaded (nerfstudio would end in a bare AssertionError)."""
    from bts_studio.data.checks import UserError

    argv = sys.argv if argv is None else argv
    if not argv or Path(argv[0]).name != "ns-export":
        return
    command = next((argument for argument in argv[1:] if not argument.startswith("-")), None)
    if command in UNSUPPORTED_EXPORTS:
        raise UserError(
            f"ns-export {command} is not supported for {method} runs ({UNSUPPORTED_EXPORTS[command]}). Supported: "
            + ", ".join(f"ns-export {name}" for name in SUPPORTED_EXPORTS)
            + " (a mesh: ns-export tsdf --load-config CONFIG --output-dir DIR)."
        )
