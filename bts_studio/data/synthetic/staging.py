"""Generators write a whole dataset folder atomically: built in a staging sibling, then renamed into place.

A reader never sees a half-written dataset, and an existing ``out`` is replaced only once the new one is complete.
The process id in the staging name lets a later run delete what a killed run left (``remove_stale_staging``).
"""

import os
import shutil
from pathlib import Path
from typing import Callable

from bts_studio.data.checks import remove_stale_staging


def write_folder_atomically(out: Path, build: Callable[[Path], None], tool: str) -> None:
    """Call ``build(staging)`` on a fresh staging folder beside ``out``, then move it to ``out``.

    Args:
        out: the dataset folder to create or replace (the caller has already checked ``--overwrite``).
        build: writes the dataset into the folder it is given.
        tool: the command's name, for the message about removed leftovers.

    On any exception (Ctrl-C included) the staging folder is removed and ``out`` is left as it was.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale_staging(out):
        print(f"removed {stale}, left by an interrupted {tool} run")
    partial = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:
        build(partial)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        retired = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, retired)
        os.replace(partial, out)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.replace(partial, out)
