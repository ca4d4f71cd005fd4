"""Compare the two training halves of benchmarks/gpu_speed.sh: loss curves and test depth metrics, fast vs twin.

    python benchmarks/speed_compare.py OUT_A OUT_B --output docs/images/bts_speed_curves.png

Each folder may hold ``fast_*`` and/or ``twin_*`` files (``<name>_curve.csv``, ``<name>_eval.json``,
``<name>_agreement.json``); with one folder per seed, each run is labelled by its folder
(``python benchmarks/speed_compare.py fast42 twin42 fast43 twin43``). Metrics are per-image means ± std.
Prints a markdown table (steps, steady-state ns-train ms/step, mean loss over the first and last tenth of the
logged steps, test abs_rel / a1 / PSNR, depth agreement with the fp32 twin on the
trained checkpoint) and plots both curves (moving average over 10 logged steps) into ``--output``.
"""

import argparse
import csv
import json
from pathlib import Path


def load(folders, name):
    found = {}
    for folder in folders:
        for kind, suffix in (("curve", "_curve.csv"), ("eval", "_eval.json"), ("agreement", "_agreement.json")):
            path = Path(folder) / f"{name}{suffix}"
            if path.exists() and kind not in found:
                found[kind] = list(csv.DictReader(path.open())) if kind == "curve" else json.loads(path.read_text())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--output", type=Path, default=None, help="PNG of both loss curves")
    args = parser.parse_args()
    # "fast": the run with bts-density's defaults (gpu_speed.sh's train_fast); its agreement row is "default".
    # A name found in several folders (e.g. one folder per seed) gives one run per folder, labelled by the folder.
    runs = {}
    for name in ("fast", "twin"):
        holders = [folder for folder in args.folders if (folder / f"{name}_curve.csv").exists()]
        if len(holders) <= 1:
            runs[name] = load(args.folders, name)
        for folder in holders if len(holders) > 1 else []:
            runs[f"{name} ({folder.name})"] = load([folder], name)
    print(
        "| run | steps | ns-train ms/step (2nd half) | loss first 10% | loss last 10% | abs_rel | a1 | PSNR "
        "| depth vs fp32 twin (mean / p99) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, run in runs.items():
        rows = run.get("curve") or []
        k = max(1, len(rows) // 10)
        loss = [float(r["loss"]) for r in rows]
        first = f"{sum(loss[:k]) / k:.4f}" if loss else "-"
        last = f"{sum(loss[-k:]) / k:.4f}" if loss else "-"
        steps = rows[-1].get("step", "-") if rows else "-"
        pace = "-"
        if len(rows) >= 4:  # steady state: the second half of the run, past start-up and compilation
            a, b = rows[len(rows) // 2], rows[-1]
            pace = f"{1000 * (float(b['seconds']) - float(a['seconds'])) / max(1, int(b['step']) - int(a['step'])):.1f}"
        metrics = (run.get("eval") or {}).get("results", {})
        row = "default" if name.startswith("fast") else "twin"
        agree = ((run.get("agreement") or {}).get("variants") or {}).get(row, {})
        agreement = (
            f"{agree['depth_rel_mean']:.1e} / {agree['depth_rel_p99']:.1e}" if "depth_rel_mean" in agree else "-"
        )
        cells = [
            f"{metrics[key]:.4f}" + (f" ± {metrics[key + '_std']:.4f}" if key + "_std" in metrics else "")
            if key in metrics
            else "-"
            for key in ("abs_rel", "a1", "psnr")
        ]
        print(f"| {name} | {steps} | {pace} | {first} | {last} | " + " | ".join(cells) + f" | {agreement} |")
    if args.output is not None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for name, run in runs.items():
            rows = run.get("curve") or []
            if not rows:
                continue
            steps = [float(r["step"]) for r in rows]
            loss = [float(r["loss"]) for r in rows]
            smooth = [sum(loss[max(0, i - 9) : i + 1]) / len(loss[max(0, i - 9) : i + 1]) for i in range(len(loss))]
            style = "--" if name.startswith("twin") else "-"
            ax.plot(steps, smooth, style, label=f"{name} (moving average of 10 logs)")
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title("bts-density: fast paths vs twin, same seeds and steps")
        ax.legend()
        fig.tight_layout()
        args.output.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.output, dpi=100)
        print(f"curves: {args.output}")


if __name__ == "__main__":
    main()
