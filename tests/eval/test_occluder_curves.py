"""benchmarks/occluder_curves.py on hand-made eval-occupancy reports with known per-image values."""

import json
import math
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def script(load_benchmark):
    return load_benchmark("occluder_curves")


def rows(values, frames=None):
    frames = frames if frames is not None else list(range(len(values)))
    return [
        {"sequence": "s", "frame_id": f, "o_acc": 0.9, "ie_acc": 0.5, "ie_rec": v, "o_rec": 0.8}
        for f, v in zip(frames, values, strict=True)
    ]


def write_report(path: Path, model_ie_rec, base_ie_rec, frames=None, baseline_first=False) -> Path:
    exact = {"bts-density": rows(model_ie_rec, frames), "depth+4m": rows(base_ie_rec, frames)}
    if baseline_first:  # the script must find the baseline by name, not by position
        exact = dict(reversed(list(exact.items())))
    official = {
        "bts-density": rows([0.2] * len(model_ie_rec), frames),
        "depth+4m": rows([0.1] * len(base_ie_rec), frames),
    }
    path.write_text(json.dumps({"per_image": {"exact": exact, "official": official}}))
    return path


def se(values):
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def test_paired_difference_and_standard_error(script, tmp_path, monkeypatch, capsys):
    a = write_report(tmp_path / "a.json", [0.5, 0.7, None, 0.4], [0.1, 0.3, 0.1, 0.2], baseline_first=True)
    b = write_report(tmp_path / "b.json", [0.2, 0.3, 0.9, float("nan")], [0.1, 0.1, 0.1, 0.1])
    output = tmp_path / "curves.png"
    argv = ["occluder_curves.py", "--run", f"fish=100:{a}", "--run", f"none=100:{b}", "--pair", "fish", "none"]
    monkeypatch.setattr(sys, "argv", argv + ["--output", str(output)])
    script.main()
    text = capsys.readouterr().out
    # Across runs, images where both are defined: 0.5 - 0.2, 0.7 - 0.3 (None and NaN left out). The paired mean
    # 0.35 differs from the difference of the unpaired means (0.5333 - 0.4667).
    diffs = [0.3, 0.4]
    assert f"| 100 | ie_rec | 0.533 ± 0.088 | 0.467 ± 0.219 | +0.350 ± {se(diffs):.3f} | 2 of 2 |" in text
    # The model against its own baseline, per run: 0.4, 0.4, 0.2 (a baseline that is not constant, so the paired
    # standard error differs from the model's own).
    assert (
        f"| fish | 100 | exact | ie_rec | 0.533 ± 0.088 | 0.175 ± 0.048 | +0.333 ± {se([0.4, 0.4, 0.2]):.3f} |" in text
    )
    assert "| fish | 100 | official | ie_rec | 0.200 ± 0.000 | 0.100 ± 0.000 | +0.100 ± 0.000 | 4 of 4 |" in text
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.partial*")), "the picture is written through a temporary file, then renamed"
    monkeypatch.setattr(sys, "argv", argv + ["--output", str(output)])
    with pytest.raises(SystemExit, match="pass --overwrite"):
        script.main()
    output.write_bytes(b"old")
    monkeypatch.setattr(sys, "argv", argv + ["--output", str(output), "--overwrite"])
    script.main()
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_runs_are_refused_with_the_argument_named(script, tmp_path, monkeypatch):
    a = write_report(tmp_path / "a.json", [0.5, 0.7], [0.1, 0.1])
    other = write_report(tmp_path / "other.json", [0.5, 0.7], [0.1, 0.1], frames=[3, 4])
    short = tmp_path / "short.json"
    short.write_text(json.dumps({"per_image": {"exact": {"m": rows([0.5, 0.7]), "depth+4m": rows([0.1])}}}))
    unnamed = tmp_path / "unnamed.json"
    unnamed.write_text(json.dumps({"per_image": {"exact": {"m": rows([0.5]), "n": rows([0.1])}}}))
    (tmp_path / "empty.json").write_text("{}")
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    cases = [
        (["--run", f"fish:{a}"], r"--run 'fish:.*expected LABEL=STEPS:PATH"),
        (["--run", f"=100:{a}"], "expected LABEL=STEPS:PATH"),
        (["--run", f"fish=100:{tmp_path / 'missing.json'}"], "missing.json is not a file"),
        (["--run", f"fish=100:{tmp_path}"], "is not a file"),
        (["--run", f"fish=100:{tmp_path / 'broken.json'}"], "broken.json is not JSON"),
        (["--run", f"fish=100:{tmp_path / 'list.json'}"], "no per-image exact results"),
        (["--run", f"fish=100:{tmp_path / 'empty.json'}"], "no per-image exact results"),
        (["--run", f"fish=100:{short}"], "score different images"),
        (["--run", f"fish=100:{unnamed}"], "one model and of depth\\+4m"),
        (["--run", f"fish=100:{a}", "--run", f"none=100:{other}", "--pair", "fish", "none"], "different test images"),
        (["--run", f"fish=100:{a}", "--run", f"none=200:{a}", "--pair", "fish", "none"], "no step has a --run"),
        (["--run", f"fish=100:{a}", "--run", f"fish=100:{other}"], "given twice"),
        (["--run", f"fish=100:{a}", "--pair", "fish", "fish"], "two different runs"),
        (["--run", f"fish=100:{a}", "--output", str(tmp_path / "curves")], "expected a .png path"),
    ]
    for extra, message in cases:
        monkeypatch.setattr(sys, "argv", ["occluder_curves.py", *extra])
        with pytest.raises(SystemExit, match=message):
            script.main()
