"""Where the wall time of an ``ns-train`` step goes (issue 17): batch draw, model step, non-finite check, the rest.

Runs nerfstudio's own ``Trainer.train`` loop (as ``ns-train`` does, no viewer, tensorboard writer, no saves or
evals inside the timed steps) on the tiny CPU data of ``benchmarks/loss_fingerprint.py`` and times, per step:

- ``next_train``: the datamanager's batch draws made during the step (its own batch, or the next step's when
  drawn ahead);
- ``check``: the trainer's non-finite check as queued (``BTSStudioTrainer._non_finite_flag``);
- ``model``: the rest of ``train_iteration`` (forward, loss, backward, optimizer and scheduler steps);
- ``loop``: everything of the loop iteration outside ``train_iteration`` (callbacks, writers, step checks).

Prints one JSON line per method with the medians (ms) over the steps after ``--warmup``::

    python benchmarks/ns_step_breakdown.py --steps 40 --methods bts-density-tiny dvr-tiny [--draw-ahead both]

On the CPU every op is synchronous, so these are host costs. On CUDA (``--data DIR``: bts-density's own preset on
a KITTI-360 folder, e.g. the default synthetic set) the parts are the host's time to issue them, and ``sync`` (from
the step's last queued work to the end of ``StepAgreement.resolve``: the read of the non-finite flag, the step's
one host sync) is split out of ``model``: it is the wait for the GPU::

    python benchmarks/ns_step_breakdown.py --data /tmp/KITTI-360 --steps 300 --warmup 30 --draw-ahead on
    [--extra-args --pipeline.model.cuda-graphs-training False]

(``gpu_nsstep.sh`` compares whole ns-train steps with the model-only bench.)
"""

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loss_fingerprint import BUILDERS, set_up_trainer, tiny_trainer  # noqa: E402 - a sibling script


def full_trainer(data: Path, steps: int, work: Path, configure, extra_args: list):
    """bts-density's own preset (``ns-train bts-density`` with ``extra_args``) on ``data``, set up on CUDA (else
    the CPU, for a smoke test)."""
    import torch
    import tyro

    from bts_studio.methods.bts.method_config import bts_density_config

    default = bts_density_config()
    # as ns-train parses it: booleans take a value (``--pipeline.model.cuda-graphs-training False``)
    config = tyro.cli(tyro.conf.FlagConversionOff[type(default)], default=default, args=extra_args)
    config.pipeline.datamanager.data = data
    configure(config)
    return set_up_trainer(config, steps, work, "cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def sync_sites(sites: Counter):
    """Count the host syncs of the enclosed CUDA work by the innermost project or nerfstudio frame that made them
    (``torch.cuda.set_sync_debug_mode``: warns on every synchronising call)."""
    import torch

    def record(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1] if "bts_studio" in f.filename or "nerfstudio" in f.filename]
        where = frames[-1] if frames else None
        sites[f"{where.filename.rsplit('/', 2)[-1]}:{where.lineno} {where.name}" if where else str(filename)] += 1

    previous = warnings.showwarning
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
            warnings.showwarning = previous


def breakdown(
    name: str,
    steps: int,
    warmup: int,
    work: Path,
    draw_ahead: bool = True,
    data=None,
    extra_args=(),
    sync_debug_steps: int = 0,
) -> dict:
    def configure(config) -> None:
        config.steps_per_save = config.steps_per_eval_batch = config.steps_per_eval_image = 10**9
        config.steps_per_eval_all_images = 10**9
        config.logging.steps_per_log = 50
        config.pipeline.draw_ahead = draw_ahead

    if data is None:
        trainer = tiny_trainer(name, steps, work, configure)
    else:
        trainer = full_trainer(data, steps, work, configure, list(extra_args))
    times: dict = {"next_train": {}, "check": {}, "iteration": {}, "start": {}, "sync": {}, "mark": {}}
    sites: Counter = Counter()
    agreement = getattr(trainer.pipeline, "step_agreement", None)
    if agreement is not None:
        inner_resolve = agreement.resolve

        def timed_resolve(*args, **kwargs):
            out = inner_resolve(*args, **kwargs)
            # from the step's last queued host work (the check, or the draw ahead after it) to here: the read of
            # the non-finite flag (the wait for the GPU) and the agreement
            times["sync"][trainer.step] = time.perf_counter() - times["mark"][trainer.step]
            return out

        agreement.resolve = timed_resolve
    datamanager = trainer.pipeline.datamanager
    inner_next_train, inner_iteration = datamanager.next_train, trainer.train_iteration
    inner_draw = trainer._draw_train_batch  # the datamanager's own next_train, which the trainer draws ahead with
    inner_check = trainer._non_finite_flag

    def timed_next_train(step):
        start = time.perf_counter()
        batch = inner_next_train(step)
        # charged to the loop step it ran in (its own step, or the one before when drawn ahead)
        times["next_train"][trainer.step] = times["next_train"].get(trainer.step, 0.0) + time.perf_counter() - start
        return batch

    def timed_draw(step):
        start = time.perf_counter()
        batch = inner_draw(step)
        end = times["mark"][trainer.step] = time.perf_counter()
        times["next_train"][trainer.step] = times["next_train"].get(trainer.step, 0.0) + end - start
        return batch

    def timed_iteration(step):
        start = times["start"][step] = time.perf_counter()
        if warmup <= step < warmup + sync_debug_steps:
            with sync_sites(sites):
                out = inner_iteration(step)
        else:
            out = inner_iteration(step)
        times["iteration"][step] = time.perf_counter() - start
        return out

    def timed_check(*args):
        start = time.perf_counter()
        out = inner_check(*args)
        end = times["mark"][trainer.step] = time.perf_counter()
        times["check"][trainer.step] = end - start
        return out

    trainer._draw_train_batch = timed_draw
    datamanager.next_train, trainer.train_iteration, trainer._non_finite_flag = (
        timed_next_train,
        timed_iteration,
        timed_check,
    )
    begin = time.perf_counter()
    trainer.train()
    end = time.perf_counter()
    rows = {key: [] for key in ("step", "next_train", "model", "check", "sync", "loop")}
    starts = times["start"]
    for step in range(warmup, steps - 1):
        total = starts[step + 1] - starts[step]
        draw = times["next_train"].get(step, 0.0)
        rows["step"].append(total)
        rows["next_train"].append(draw)
        rows["check"].append(times["check"].get(step, 0.0))
        rows["sync"].append(times["sync"].get(step, 0.0))
        rows["model"].append(times["iteration"][step] - draw - rows["check"][-1] - rows["sync"][-1])
        rows["loop"].append(total - times["iteration"][step])
    medians = {f"{key}_ms": round(1000 * statistics.median(values), 2) for key, values in rows.items()}
    if sync_debug_steps:  # the timed medians include these steps' slower (warning) syncs only when steps are few
        medians["syncs_per_step"] = {site: n / sync_debug_steps for site, n in sites.most_common()}
    wall = round(end - begin, 2)
    return {"method": name, "draw_ahead": draw_ahead, "steps": steps, "warmup": warmup, "wall_s": wall, **medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=["bts-density-tiny", "dvr-tiny"], choices=list(BUILDERS))
    parser.add_argument("--work", type=Path, default=None, help="data and run folder (default: a temporary one)")
    parser.add_argument("--draw-ahead", choices=["on", "off", "both"], default="both", help="pipeline.draw_ahead")
    parser.add_argument("--data", type=Path, default=None, help="a KITTI-360 folder: bts-density's preset on CUDA")
    parser.add_argument(
        "--sync-debug-steps", type=int, default=0, help="CUDA: count host syncs by site over this many steps"
    )
    parser.add_argument("--extra-args", nargs=argparse.REMAINDER, default=[], help="ns-train arguments (--data)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        for name in ["bts-density"] if args.data is not None else args.methods:
            for ahead in {"on": [True], "off": [False], "both": [False, True]}[args.draw_ahead]:
                result = breakdown(
                    name, args.steps, args.warmup, work, ahead, args.data, args.extra_args, args.sync_debug_steps
                )
                print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
