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

CPU only (on the CPU every op is synchronous, so these are host costs; the GPU comparison is
``benchmarks/gpu_nsstep.sh``).
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loss_fingerprint import BUILDERS, tiny_trainer  # noqa: E402 - a sibling script


def breakdown(name: str, steps: int, warmup: int, work: Path, draw_ahead: bool = True) -> dict:
    def configure(config) -> None:
        config.steps_per_save = config.steps_per_eval_batch = config.steps_per_eval_image = 10**9
        config.steps_per_eval_all_images = 10**9
        config.logging.steps_per_log = 50
        config.pipeline.draw_ahead = draw_ahead

    trainer = tiny_trainer(name, steps, work, configure)
    times: dict = {"next_train": {}, "check": {}, "iteration": {}, "start": {}}
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
        times["next_train"][trainer.step] = times["next_train"].get(trainer.step, 0.0) + time.perf_counter() - start
        return batch

    def timed_iteration(step):
        start = times["start"][step] = time.perf_counter()
        out = inner_iteration(step)
        times["iteration"][step] = time.perf_counter() - start
        return out

    def timed_check(*args):
        start = time.perf_counter()
        out = inner_check(*args)
        times["check"][trainer.step] = time.perf_counter() - start
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
    rows = {key: [] for key in ("step", "next_train", "model", "check", "loop")}
    starts = times["start"]
    for step in range(warmup, steps - 1):
        total = starts[step + 1] - starts[step]
        draw = times["next_train"].get(step, 0.0)
        rows["step"].append(total)
        rows["next_train"].append(draw)
        rows["check"].append(times["check"].get(step, 0.0))
        rows["model"].append(times["iteration"][step] - draw - rows["check"][-1])
        rows["loop"].append(total - times["iteration"][step])
    medians = {f"{key}_ms": round(1000 * statistics.median(values), 2) for key, values in rows.items()}
    wall = round(end - begin, 2)
    return {"method": name, "draw_ahead": draw_ahead, "steps": steps, "warmup": warmup, "wall_s": wall, **medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=["bts-density-tiny", "dvr-tiny"], choices=list(BUILDERS))
    parser.add_argument("--work", type=Path, default=None, help="data and run folder (default: a temporary one)")
    parser.add_argument("--draw-ahead", choices=["on", "off", "both"], default="both", help="pipeline.draw_ahead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        for name in args.methods:
            for ahead in {"on": [True], "off": [False], "both": [False, True]}[args.draw_ahead]:
                print(json.dumps(breakdown(name, args.steps, args.warmup, work, ahead)), flush=True)


if __name__ == "__main__":
    main()
