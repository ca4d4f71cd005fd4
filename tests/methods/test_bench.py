"""Tier 3: `bts-studio bench` runs end to end on the CPU at a tiny size and prints its one table with ratios."""

import pytest

from bts_studio.bench import BenchConfig, format_table, run


def test_the_bench_measures_each_variant_against_the_reference_and_prints_one_table():
    config = BenchConfig(
        device="cpu",
        resnet_layers=18,
        height=64,
        width=96,
        groups=1,
        rays_per_group=64,
        num_samples=8,
        render_views=1,
        chunk=2048,
        steps=1,
        warmup=1,
        renders=1,
        batch_sizes=(1,),
        throughput_repeats=1,
        variants=("twin-fp32", "twin", "default"),
        density_agreement=False,
    )
    results = run(config)
    rows = {row["variant"]: row for row in results["variants"]}
    assert set(rows) == {"twin-fp32", "twin", "default"} and not any("error" in row for row in rows.values())
    # On the CPU every variant is the fp32 twin (auto = twin, no CUDA graphs): the depth agrees to rounding.
    assert rows["default"]["depth_rel_mean"] < 1e-6 and rows["twin"]["depth_rel_p99"] < 1e-5
    table = format_table(results)
    assert table.count("\n| ") == 4  # header + three variants
    assert "default: train" in table and "the twin's" in table and "x the floor" in table
    assert results["train_step_ms"] == rows["default"]["train_step_ms"]  # top-level figures: the defaults'


def test_an_unknown_variant_is_refused_before_anything_is_built(monkeypatch):
    import bts_studio.bench as bench

    monkeypatch.setattr(bench, "build_model", lambda *args: pytest.fail("the model was built"))
    with pytest.raises(ValueError, match=r"unknown variant\(s\) \['warp'\]; choose from \["):
        run(BenchConfig(device="cpu", variants=("twin", "warp")))
