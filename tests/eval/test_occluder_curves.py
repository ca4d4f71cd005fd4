"""benchmarks/occluder_curves.py on hand-made eval-occupancy reports with known per-image values."""

import json
import math
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def script(load_benchmark):
    return load_benchmark("occluder_curves")


def write_report(path: Path, model_ie_rec, base_ie_rec, frames=None) -> Path:
    frames = frames if frames is not None else list(range(len(model_ie_rec)))

    def rows(values):
        return [
            {"sequence": "s", "frame_id": f, "o_acc": 0.9, "ie_acc": 0.5, "ie_rec": v, "o_rec": 0.8}
            for f, v in zip(frames, values, strict=True)
        ]

    report = {"per_image": {"exact": {"bts-density": rows(model_ie_rec), "depth+4m": rows(base_ie_rec)}}}
    path.write_text(json.dumps(report))
    return path


def test_paired_difference_and_standard_error(script, tmp_path, monkeypatch, capsys):
    a = write_report(tmp_path / "a.json", [0.5, 0.7, None, 0.4], [0.1, 0.1, 0.1, 0.1])
    b = write_report(tmp_path / "b.json", [0.2, 0.3, 0.3, 0.4], [0.1, 0.1, 0.1, 0.1])
    output = tmp_path / "curves.png"
    argv = ["occluder_curves.py", "--run", f"fish=100:{a}", "--run", f"none=100:{b}", "--pair", "fish", "none"]
    monkeypatch.setattr(sys, "argv", argv + ["--output", str(output)])
    script.main()
    text = capsys.readouterr().out
    # Differences where both are defined: 0.3, 0.4, 0.0 -> mean 0.2333, sample std 0.2082, se 0.1202.
    diffs = [0.3, 0.4, 0.0]
    mean = sum(diffs) / 3
    se = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2 / 3)
    assert f"| 100 | ie_rec | 0.533 ± 0.088 | 0.300 ± 0.041 | {mean:+.3f} ± {se:.3f} | 2 of 3 |" in text
    # The model against its own baseline, per run: (0.4 + 0.6 + 0.3) / 3.
    assert "| fish | 100 | exact | ie_rec | 0.533 ± 0.088 | 0.100 ± 0.000 | +0.433 ± 0.088 | 3 of 3 |" in text
    assert output.stat().st_size > 1000
    monkeypatch.setattr(sys, "argv", argv + ["--output", str(output)])
    with pytest.raises(SystemExit, match="pass --overwrite"):
        script.main()


def test_bad_runs_are_refused_with_the_argument_named(script, tmp_path, monkeypatch):
    a = write_report(tmp_path / "a.json", [0.5, 0.7], [0.1, 0.1])
    other = write_report(tmp_path / "other.json", [0.5, 0.7], [0.1, 0.1], frames=[3, 4])
    cases = [
        (["--run", f"fish:{a}"], "expected LABEL=STEPS:PATH"),
        (["--run", f"fish=100:{tmp_path / 'missing.json'}"], "does not exist"),
        (["--run", f"fish=100:{a}", "--run", f"none=100:{other}", "--pair", "fish", "none"], "different test images"),
        (["--run", f"fish=100:{a}", "--run", f"none=200:{a}", "--pair", "fish", "none"], "no step has a --run"),
    ]
    (tmp_path / "empty.json").write_text("{}")
    cases.append((["--run", f"fish=100:{tmp_path / 'empty.json'}"], "no per-image exact results"))
    for extra, message in cases:
        monkeypatch.setattr(sys, "argv", ["occluder_curves.py", *extra])
        with pytest.raises(SystemExit, match=message):
            script.main()
