"""The per-step training-curve CSV of a run (``--pipeline.train-log-csv FILE --pipeline.train-log-every 1``: a row per
step with ``step``, ``seconds`` since the start and the logged losses), as the GPU scripts read it.

Shared by ``gpu_ddp.sh`` and ``gpu_nsstep.sh`` (their summaries import it from ``benchmarks/``), so both measure a
steady state the same way: from the wall clock of the first and last logged steps at or after the warm-up.
"""

import csv
from pathlib import Path
from typing import Dict, List, Optional, Tuple

__all__ = ["read_curve", "steady_interval"]


def read_curve(path: Path) -> List[Dict[str, str]]:
    """The CSV's rows (column -> text); ``[]`` when the run wrote none (skipped or failed)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open() as stream:
        return list(csv.DictReader(stream))


def steady_interval(rows: List[Dict[str, str]], warmup: int) -> Optional[Tuple[int, float]]:
    """``(steps, seconds)`` between the first and the last row whose step is ``>= warmup``; None with fewer than two
    such rows."""
    steady = [row for row in rows if int(row["step"]) >= warmup]
    if len(steady) < 2:
        return None
    steps = int(steady[-1]["step"]) - int(steady[0]["step"])
    return steps, float(steady[-1]["seconds"]) - float(steady[0]["seconds"])
