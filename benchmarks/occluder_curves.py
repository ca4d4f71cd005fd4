"""Exact occupancy against training steps, for one or more runs of `benchmarks/gpu_occluders.sh` (issue #18).

Each ``--run`` names one evaluated checkpoint: ``LABEL=STEPS:PATH``, where PATH is the `occupancy.json` that
`bts-studio eval-occupancy` wrote for that checkpoint (a chained run gives one per call). The script prints, as
markdown:

- per run and checkpoint, the per-image means and standard errors of exact (and official) O_acc, IE_acc, IE_rec
  and O_rec for the model and for "Depth + 4 m" (built from the model's own depth), and the paired per-image
  difference model minus Depth + 4 m;
- with ``--pair A B``, per step both runs reached, the paired per-image difference run A minus run B of the model's
  exact IE_rec, IE_acc, O_acc and O_rec (the same test images in both runs: same data, same split). With A the run
  with fisheye frames and B the run without, this is the paper's fisheye ablation ("Ours (no fisheye)" in BTS's
  KITTI-360 occupancy table, `../shared/reference/bts.md`), same steps and same seed.

With ``--output`` it also draws exact IE_acc and IE_rec against steps, model solid and Depth + 4 m dashed, one
colour per run.

    python benchmarks/occluder_curves.py --run fisheye=7000:c1g0/occupancy.json --run none=7000:c1g1/occupancy.json \\
        --run fisheye=15500:c2g0/occupancy.json ... --pair fisheye none --output curves.png

Raises SystemExit naming the argument when a ``--run`` is malformed or repeated, its file is missing or is not an
`eval-occupancy` report with per-image exact results of a model and of ``depth+4m`` over the same images, two runs
are paired over different images, or ``--output`` is not a ``.png`` path.
"""

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

METRICS = ("o_acc", "ie_acc", "ie_rec", "o_rec")
BASELINE = "depth+4m"  # eval-occupancy --baseline depth+4m
Run = tuple[str, int, dict]  # label, steps, report


def mean_se(values: Sequence[float | None]) -> tuple[float, float, int]:
    """Mean, standard error (sample std / sqrt(n)) and count of the defined values (None and NaN left out)."""
    kept = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(kept)
    if n == 0:
        return float("nan"), float("nan"), 0
    mean = sum(kept) / n
    if n == 1:
        return mean, float("nan"), 1
    variance = sum((v - mean) ** 2 for v in kept) / (n - 1)
    return mean, math.sqrt(variance / n), n


def paired(a: list[dict], b: list[dict], name: str) -> tuple[float, float, int, int]:
    """Mean and standard error of the per-image difference a - b of metric ``name``, the number of images where
    both are defined, and on how many of them a is higher."""
    diffs = []
    for x, y in zip(a, b, strict=True):
        u, v = x.get(name), y.get(name)
        if u is not None and v is not None:
            diffs.append(u - v)  # a NaN on either side stays NaN, which mean_se leaves out
    mean, se, n = mean_se(diffs)
    return mean, se, n, sum(d > 0 for d in diffs)


def load_run(spec: str) -> Run:
    """Parse ``LABEL=STEPS:PATH`` and read the report; SystemExit naming ``--run`` and the path when it is not an
    eval-occupancy report with per-image exact results of one model and of Depth + 4 m over the same images."""
    try:
        label, rest = spec.split("=", 1)
        steps, path = rest.split(":", 1)
        steps_value = int(steps)
    except ValueError:
        label = ""
    if not label:
        raise SystemExit(f"--run {spec!r}: expected LABEL=STEPS:PATH, e.g. fisheye=7000:c1g0/occupancy.json") from None
    report_path = Path(path)
    if not report_path.is_file():
        raise SystemExit(f"--run {spec!r}: {report_path} is not a file (expected eval-occupancy's occupancy.json)")
    try:
        report = json.loads(report_path.read_text())
    except json.JSONDecodeError as error:
        raise SystemExit(f"--run {spec!r}: {report_path} is not JSON ({error})") from None
    per_image = report.get("per_image") if isinstance(report, dict) else None
    variants = per_image if isinstance(per_image, dict) else {}
    for variant, by_model in variants.items():
        names = sorted(by_model) if isinstance(by_model, dict) else []
        if (
            len(names) != 2
            or BASELINE not in names
            or not all(isinstance(by_model[n], list) and all(isinstance(r, dict) for r in by_model[n]) for n in names)
        ):
            raise SystemExit(
                f"--run {spec!r}: {report_path}'s per_image.{variant} should list the per-image rows of one model "
                f"and of {BASELINE}; it has {names or type(by_model).__name__}"
            )
        model, base = by_model[next(n for n in names if n != BASELINE)], by_model[BASELINE]
        if [image_id(r) for r in model] != [image_id(r) for r in base]:
            raise SystemExit(
                f"--run {spec!r}: {report_path}: the model and {BASELINE} rows of {variant} score different images"
            )
    if "exact" not in variants:
        raise SystemExit(
            f"--run {spec!r}: {report_path} has no per-image exact results of a model and its baseline; "
            "run eval-occupancy with --variant both --baseline depth+4m"
        )
    return label, steps_value, report


def image_id(row: dict) -> tuple:
    """What names a test image in a per-image row."""
    return row.get("sequence"), row.get("frame_id")


def models(report: dict, variant: str) -> tuple[list[dict], list[dict]]:
    """Per-image rows of the model and of Depth + 4 m (by name, whatever the report's key order)."""
    by_model = report["per_image"][variant]
    model = next(name for name in by_model if name != BASELINE)
    return by_model[model], by_model[BASELINE]


def compared(a: list[dict], b: list[dict], name: str) -> str:
    """Markdown cells of metric ``name``: a's mean ± se, b's, the paired a - b ± se, and on how many images a is
    higher."""
    a_mean, a_se, _ = mean_se([r.get(name) for r in a])
    b_mean, b_se, _ = mean_se([r.get(name) for r in b])
    d_mean, d_se, n, higher = paired(a, b, name)
    return f"{a_mean:.3f} ± {a_se:.3f} | {b_mean:.3f} ± {b_se:.3f} | {d_mean:+.3f} ± {d_se:.3f} | {higher} of {n}"


def run_table(runs: list[Run]) -> list[str]:
    """Markdown rows: per run, checkpoint, variant and metric, the model, Depth + 4 m and their paired difference."""
    lines = [
        "| run | steps | variant | metric | model | Depth + 4 m | model - Depth + 4 m (paired) | model higher on |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, steps, report in runs:
        for variant in ("exact", "official"):
            if variant not in report["per_image"]:
                continue
            model, base = models(report, variant)
            for name in METRICS:
                lines.append(f"| {label} | {steps} | {variant} | {name} | {compared(model, base, name)} |")
    return lines


def pair_table(runs: list[Run], first: str, second: str) -> list[str]:
    """Markdown rows: per step both runs reached, run ``first`` minus run ``second``, image by image (model only)."""
    by_key = {(label, steps): report for label, steps, report in runs}
    steps_first = {steps for label, steps in by_key if label == first}
    steps_both = sorted(steps_first & {steps for label, steps in by_key if label == second})
    if not steps_both:
        raise SystemExit(f"--pair {first} {second}: no step has a --run of both labels")
    lines = [
        f"| steps | metric (exact) | {first} | {second} | {first} - {second} (paired) | {first} higher on |",
        "|---|---|---|---|---|---|",
    ]
    for steps in steps_both:
        a_model, _ = models(by_key[(first, steps)], "exact")
        b_model, _ = models(by_key[(second, steps)], "exact")
        if [image_id(r) for r in a_model] != [image_id(r) for r in b_model]:
            raise SystemExit(f"--pair {first} {second}: at {steps} steps the two runs scored different test images")
        for name in ("ie_rec", "ie_acc", "o_acc", "o_rec"):
            lines.append(f"| {steps} | {name} | {compared(a_model, b_model, name)} |")
    return lines


def plot(runs: list[Run], output: Path) -> None:
    """Exact IE_acc and IE_rec against steps (± standard errors), written atomically to ``output`` (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(label for label, _, _ in runs))
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for axis, name, title in zip(axes, ("ie_acc", "ie_rec"), ("exact IE_acc", "exact IE_rec"), strict=True):
        for index, label in enumerate(labels):
            colour = f"C{index}"
            points = sorted((steps, report) for lab, steps, report in runs if lab == label)
            xs = [steps for steps, _ in points]
            model = [mean_se([r.get(name) for r in models(rep, "exact")[0]]) for _, rep in points]
            base = [mean_se([r.get(name) for r in models(rep, "exact")[1]]) for _, rep in points]
            means, errors = [m for m, _, _ in model], [s for _, s, _ in model]
            axis.errorbar(xs, means, yerr=errors, color=colour, marker="o", capsize=3, label=f"{label}: bts-density")
            means, errors = [m for m, _, _ in base], [s for _, s, _ in base]
            axis.errorbar(
                xs,
                means,
                yerr=errors,
                color=colour,
                marker="s",
                linestyle="--",
                capsize=3,
                alpha=0.7,
                label=f"{label}: Depth + 4 m",
            )
        axis.set_title(title)
        axis.set_xlabel("training steps")
        axis.set_ylim(0.0, 1.0)
        axis.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    figure.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.stem + ".partial" + output.suffix)
    figure.savefig(partial, dpi=110, format="png")
    partial.replace(output)  # atomic: a reader never sees half a picture


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="LABEL=STEPS:PATH to an occupancy.json")
    parser.add_argument("--pair", nargs=2, metavar=("A", "B"), help="paired per-image difference run A - run B")
    parser.add_argument("--output", type=Path, help="PNG of exact IE_acc and IE_rec against steps")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    args = parser.parse_args()
    if args.output is not None:
        if args.output.suffix.lower() != ".png":
            raise SystemExit(f"--output {args.output}: expected a .png path")
        if args.output.is_dir():
            raise SystemExit(f"--output {args.output} is a folder; expected a .png path")
        if args.output.exists() and not args.overwrite:
            raise SystemExit(f"--output {args.output} exists; pass --overwrite to replace it")
    if args.pair and args.pair[0] == args.pair[1]:
        raise SystemExit(f"--pair {args.pair[0]} {args.pair[1]}: name two different runs")
    runs = [load_run(spec) for spec in args.run]
    seen = set()
    for spec, (label, steps, _) in zip(args.run, runs, strict=True):
        if (label, steps) in seen:
            raise SystemExit(f"--run {spec!r}: run {label!r} at {steps} steps is given twice")
        seen.add((label, steps))
    lines = ["Per run and checkpoint (per-image means ± standard errors):", ""] + run_table(runs)
    if args.pair:
        lines += ["", f"Paired across runs, {args.pair[0]} minus {args.pair[1]} (model only):", ""]
        lines += pair_table(runs, *args.pair)
    print("\n".join(lines))
    if args.output is not None:
        plot(runs, args.output)
        print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
