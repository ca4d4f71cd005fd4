"""benchmarks/occluder_gradient_check.py (issue 18): the gradient it reports per region is the training loss's
derivative, on the shared tiny synthetic set (tests/eval/conftest.py)."""

import argparse

import pytest
import torch

HEIGHT, WIDTH = 64, 160  # the shared run's parsed size (tests/eval/conftest.py)


@pytest.fixture(scope="module")
def script(load_benchmark):
    return load_benchmark("occluder_gradient_check")


def build(script, synthetic_root, work, checkpoint=None):
    from bts_studio.eval.occupancy_protocol import Kitti360Calibration

    args = argparse.Namespace(
        data=synthetic_root, frames=[2, 3], height=HEIGHT, width=WIDTH, groups=2, rays=512, preset="tiny",
        checkpoint=checkpoint, no_fisheye=False, no_augment=True, near=3.0, num_samples=16, seed=0, automask=False,
        decoder_lr=None,
    )  # fmt: skip
    pipeline = script.oracle.build_pipeline(args, work)
    pipeline.model.train()
    calibration = Kitti360Calibration(synthetic_root, "2013_05_28_drive_0000_sync")
    gt = script.oracle.GroundTruth(pipeline, HEIGHT, WIDTH, calibration)
    return pipeline, gt, calibration


@pytest.fixture(scope="module")
def setup(script, synthetic_root, tmp_path_factory):
    return build(script, synthetic_root, tmp_path_factory.mktemp("occl_grad"))


@pytest.fixture(scope="module")
def trained_setup(script, synthetic_root, trained_config, tmp_path_factory):
    """The shared two-step bts-density-tiny run's weights (tests/eval/conftest.py)."""
    return build(script, synthetic_root, tmp_path_factory.mktemp("occl_grad_model"), trained_config.parent)


def run(script, setup, fields, sigma_of=None, **kwargs):
    """One batch of ``density_gradients`` (solid 2, empty 0.5 /m); ``kwargs`` are its other options."""
    torch.manual_seed(0)  # the same batch in every call
    pipeline, gt, calibration = setup
    if sigma_of is not None:
        kwargs["sigma_of"] = sigma_of
    return script.density_gradients(pipeline, gt, calibration, 1, fields, 2.0, 0.5, **kwargs)


# The hidden empty region's gradient sum is ~1000 times the visible one's smaller: at eps 0.01 its loss change (~4e-7)
# is as small as the rounding of the loss's float32 sums, which differs between CPUs (it broke on an AVX-512 machine).
# So it is measured by a central difference at eps 0.2, well above that rounding, which also cancels the curvature
# (measured: 1.02 times the gradient sum; one-sided 1.21 at 0.01, 1.14 at 0.1). The visible region keeps the
# one-sided difference: adding density there is not smooth (a central difference gives 0.18 of the gradient sum at
# eps 0.01, 0.94 at 0.1), while removing it matches autograd's derivative.
@pytest.mark.parametrize("region, eps, central", [("hidden_empty", 0.2, True), ("visible", 0.01, False)])
def test_the_gradient_sum_predicts_the_loss_change_of_emptying_a_region(script, setup, region, eps, central):
    """Removing density eps from every sample of one region changes the training loss by -eps * that region's
    reported gradient sum, to first order: the sign, the region and the scale of what the script reports are the
    loss's own. eps stays below the empty density 0.5, so relu's kink is not crossed."""
    base = run(script, setup, ["filled"])
    assert base[f"filled_{region}_samples"] > 0
    gradient_sum = base[f"filled_{region}_gradient_sum"]
    assert gradient_sum != 0.0

    def shifted(by):
        def sigma_of(name, sigma, behind, occupied, solid_sigma, empty_sigma):
            dense = script.field_sigma(name, sigma, behind, occupied, solid_sigma, empty_sigma)
            return (dense + by * script.regions(behind, occupied)[region].to(dense.dtype)).clamp_min(0.0)

        return sigma_of

    removed = run(script, setup, ["filled"], shifted(-eps))["filled_loss"]
    if central:
        added = run(script, setup, ["filled"], shifted(eps))["filled_loss"]
        assert (added - removed) / (2 * eps) == pytest.approx(gradient_sum, rel=0.1)
    else:
        assert removed - base["filled_loss"] == pytest.approx(-eps * gradient_sum, rel=0.1, abs=2e-8)


def test_the_model_fields_gradient_is_the_training_losss(script, trained_setup):
    """The trained model's own density, read through the same hook: adding eps to every sample of the hidden empty
    region changes the training loss by +eps * the reported gradient sum (the model's sigma is a softplus, > 0:
    adding keeps clear of relu's kink)."""
    eps = 0.01
    base = run(script, trained_setup, ["model"])
    assert base["model_hidden_empty_samples"] > 0 and base["model_hidden_empty_sigma_median"] > 0
    gradient_sum = base["model_hidden_empty_gradient_sum"]
    assert gradient_sum != 0.0

    def denser(name, sigma, behind, occupied, solid_sigma, empty_sigma):
        own = script.field_sigma(name, sigma, behind, occupied, solid_sigma, empty_sigma)
        return own + eps * script.regions(behind, occupied)["hidden_empty"].to(own.dtype)

    changed = run(script, trained_setup, ["model"], denser)
    assert changed["model_loss"] - base["model_loss"] == pytest.approx(eps * gradient_sum, rel=0.1, abs=2e-8)


def test_gradient_counts_name_the_direction_of_descent(script):
    """dL/dsigma > 0: a descent step lowers sigma ("down"); < 0 raises it ("up"); within 1e-12 of 0: none."""
    counts = script.gradient_counts(torch.tensor([0.5, -0.2, 0.0, 1e-13, 2e-12]))
    assert counts == pytest.approx(
        {"samples": 5, "down": 2, "up": 1, "none": 2, "gradient_sum": 0.3 + 2e-12 + 1e-13, "gradient_abs_sum": 0.7}
    )


def test_behind_input_surface_against_a_hand_placed_wall(script):
    """A wall 10-11 m ahead of a camera at the origin (OpenCV axes, the generator's frame = the model's): metres
    behind its first surface along each point's line of sight, negative in front, -inf with nothing on the line."""
    from bts_studio.data.synthetic.primitives import Scene, make_box

    wall = Scene([make_box((0.0, 0.0, 10.5), (50.0, 50.0, 0.5), label="wall")])
    points = torch.tensor([[[0.0, 0.0, 5.0], [0.0, 0.0, 12.0], [100.0, 0.0, 5.0], [0.0, 0.0, 10.5], [3.0, 0.0, 14.0]]])
    w2c = torch.eye(4)[:3][None]
    behind = script.oracle.behind_input_surface(wall, torch.eye(4, dtype=torch.float64), points, w2c)
    slanted = 14.0 * (1 - 10.0 / 14.0) * (1 + (3.0 / 14.0) ** 2) ** 0.5  # 4 m deeper in z, along a slanted sight
    assert behind[0].tolist() == pytest.approx([-5.0, 2.0, float("-inf"), 0.5, slanted])
    # The same camera as a render view: hidden only where the wall lies more than the margin before the point.
    hidden = script.oracle.hidden_in_views(wall, torch.eye(4, dtype=torch.float64), points, w2c[:, None], 0.5, 0.0)
    assert hidden[0, :, 0].tolist() == [False, True, False, False, True]


def test_fields_and_shares(script, setup):
    """The exact fields put the solid density where they should (the filled field's hidden space is solid, the
    exact field's hidden empty space is empty), the regions split every sample, and the shares are shares."""
    summary = run(script, setup, ["filled", "exact"])
    assert summary["filled_hidden_empty_sigma_median"] == pytest.approx(2.0)
    assert summary["exact_hidden_empty_sigma_median"] == pytest.approx(0.5)
    assert summary["exact_hidden_occupied_sigma_median"] == pytest.approx(2.0)
    # The hidden empty region's parts (loss camera x metres behind the surface) split it without overlap.
    parts = script.hidden_empty_part_names()
    for name in ("filled", "exact"):
        whole = summary[f"{name}_hidden_empty_samples"]
        assert sum(summary[f"{name}_hidden_empty_{part}_samples"] for part in parts) == whole
        assert sum(summary[f"{name}_hidden_empty_{part}_gradient_sum"] for part in parts) == pytest.approx(
            summary[f"{name}_hidden_empty_gradient_sum"], rel=1e-9, abs=1e-15
        )
    assert any(summary[f"exact_hidden_empty_fisheye_{lo:g}-{hi:g}m_samples"] > 0 for lo, hi in script.BANDS)
    # Every sample of the batch but each ray's forced last one (2 groups x 512 rays x 16 samples).
    total = sum(summary[f"filled_{region}_samples"] for region in script.REGIONS)
    assert total == 2 * 512 * 15
    assert total == sum(summary[f"exact_{region}_samples"] for region in script.REGIONS)
    for name in ("filled", "exact"):
        for region in script.REGIONS:
            shares = [summary[f"{name}_{region}_{kind}_share"] for kind in ("down", "up", "no_gradient")]
            assert sum(shares) == pytest.approx(1.0), (name, region)
    for key, value in summary.items():
        if key.endswith("_share"):
            assert 0.0 <= value <= 1.0, key
        if key.endswith("_push") and summary[key.replace("_push", "_samples")] == 0:
            assert value != value, key  # NaN: no sample, no direction
        elif key.endswith("_push"):
            assert -1.0 <= value <= 1.0, key
            gradient_sum = summary[key.replace("_push", "_gradient_sum")]
            assert value == 0.0 or (value > 0) == (gradient_sum > 0), key


def test_help_lists_every_option(script, monkeypatch, capsys):
    """--help renders (argparse formats help texts with %: a bare one broke it) and names the options."""
    monkeypatch.setattr("sys.argv", ["x", "--help"])
    with pytest.raises(SystemExit) as exit_info:
        script.main()
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--field", "--empty-sigma", "--visibility-margin", "--loss-term", "--checkpoint"):
        assert option in text, option


def test_a_negative_visibility_margin_is_refused_before_any_work(script, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("sys.argv", ["x", "--data", str(tmp_path / "missing"), "--visibility-margin", "-1"])
    with pytest.raises(SystemExit):
        script.main()
    assert "--visibility-margin must be 0 or more metres" in capsys.readouterr().err


def test_the_model_field_needs_a_checkpoint(script, monkeypatch, synthetic_root, capsys):
    monkeypatch.setattr("sys.argv", ["x", "--data", str(synthetic_root), "--field", "model"])
    with pytest.raises(SystemExit):
        script.main()
    assert "--field model needs --checkpoint" in capsys.readouterr().err


def test_each_sample_takes_its_loss_rays_camera(script):
    """Rays are group-major with each ray's samples in a row: camera indices [B, R] -> samples [B, R * S]."""
    from types import SimpleNamespace

    batch = SimpleNamespace(rays=SimpleNamespace(camera_indices=torch.tensor([[[0], [1], [2]], [[1], [1], [0]]])))
    fisheye_image = torch.tensor([False, True, False])
    fisheye = script.sample_fisheye(batch, fisheye_image, torch.Size([2, 6]))
    expected = [[False, False, True, True, False, False], [True, True, True, True, False, False]]
    assert fisheye.tolist() == expected


def test_surface_offsets_count_from_each_rays_first_solid_sample(script):
    """Two rays of 5 samples: one enters a solid at sample 3 (and leaves it), one meets none."""
    occupied = torch.tensor([[False, False, False, True, False, False, False, False, False, False]])
    offset = script.surface_offsets(occupied, 5)
    assert offset.tolist() == [[-3, -2, -1, 0, 1, 6, 6, 6, 6, 6]]
    hidden_empty = ~occupied
    parts = script.offset_parts(hidden_empty, offset, 5)
    assert set(parts) == set(script.OFFSETS)
    assert parts["before_1"].nonzero()[:, 1].tolist() == [2]
    assert parts["before_2-3"].nonzero()[:, 1].tolist() == [0, 1]
    assert parts["past"].nonzero()[:, 1].tolist() == [4]
    assert parts["no_surface"].nonzero()[:, 1].tolist() == [5, 6, 7, 8, 9]
    assert sum(part.long() for part in parts.values()).tolist() == hidden_empty.long().tolist()  # disjoint, cover


@pytest.mark.parametrize("metres_per_unit", [1.0, 2.5])
def test_in_cuboid_takes_the_exact_variants_box_in_the_tilted_frame(script, metres_per_unit):
    """Points placed in the tilted frame (metres), moved into a camera at a hand-made pose and a model frame of
    another scale: only those inside x -4..4, y 0..1, z 3..20 count."""
    from bts_studio.eval.occupancy import tilted_to_camera

    tilted = torch.tensor(
        [[0.0, 0.5, 10.0], [-3.9, 0.9, 19.0], [0.0, -0.5, 10.0], [5.0, 0.5, 10.0], [0.0, 0.5, 2.0], [0.0, 1.5, 4.0]],
        dtype=torch.float64,
    )
    camera = tilted_to_camera(tilted)
    angle = torch.tensor(0.3, dtype=torch.float64)  # the camera's pose: a turn about y and a shift
    rotation = torch.tensor(
        [[angle.cos(), 0, angle.sin()], [0, 1, 0], [-angle.sin(), 0, angle.cos()]], dtype=torch.float64
    )
    shift = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    world = (camera - shift) @ rotation  # w2c: camera = rotation @ world + shift
    w2c = torch.cat([rotation, shift[:, None]], dim=1)[None] / metres_per_unit
    w2c[..., :3, :3] *= metres_per_unit  # rotation stays a rotation; the shift is in model units
    to_kitti = torch.eye(4, dtype=torch.float64)
    to_kitti[:3, :3] *= metres_per_unit
    inside = script.in_cuboid((world / metres_per_unit)[None], w2c, to_kitti)
    assert inside.tolist() == [[True, True, False, False, False, False]]


def test_the_offset_parts_add_up_to_the_hidden_empty_region(script, setup):
    summary = run(script, setup, ["exact"])
    for stat in ("samples", "gradient_sum"):
        parts = sum(summary[f"exact_hidden_empty_{offset}_{stat}"] for offset in script.OFFSETS)
        assert parts == pytest.approx(summary[f"exact_hidden_empty_{stat}"], rel=1e-9, abs=1e-15)
        for split in (script.OFFSETS, script.CAMERAS):  # each split of the cuboid's part covers it
            cuboid = sum(summary[f"exact_hidden_empty_in_cuboid_{part}_{stat}"] for part in split)
            assert cuboid == pytest.approx(summary[f"exact_hidden_empty_in_cuboid_{stat}"], rel=1e-9, abs=1e-15)
    assert 0 < summary["exact_hidden_empty_in_cuboid_samples"] < summary["exact_hidden_empty_samples"]


def test_the_visibility_test_changes_the_colours_and_is_put_back(script, setup):
    """--visibility makes samples hidden from a render view invalid there: the exact field's loss changes, and the
    colour lookup is BTS's again afterwards (the same loss as before)."""
    from bts_studio.methods.bts import rendering

    lookup = rendering.sample_view_colours
    plain = run(script, setup, ["exact"])
    tested = run(script, setup, ["exact"], visibility=True)
    assert tested["exact_loss"] != pytest.approx(plain["exact_loss"], rel=1e-6)
    assert rendering.sample_view_colours is lookup
    assert run(script, setup, ["exact"])["exact_loss"] == plain["exact_loss"]


def test_the_loss_terms_add_up_to_the_training_loss(script, setup):
    """The gradient is linear in the loss terms: photometric plus smoothness gives the whole; an unknown term is
    refused by name."""

    def with_terms(terms):
        return run(script, setup, ["exact"], loss_terms=terms)

    whole = run(script, setup, ["exact"])
    parts = [with_terms([term]) for term in ("photometric_loss", "smoothness_loss")]
    for key in ("exact_loss", "exact_hidden_empty_gradient_sum", "exact_visible_gradient_sum"):
        assert parts[0][key] + parts[1][key] == pytest.approx(whole[key], rel=1e-4, abs=1e-12), key
    assert parts[1]["exact_visible_gradient_sum"] != 0.0
    with pytest.raises(ValueError, match="no_such_loss"):
        with_terms(["no_such_loss"])


def test_hidden_frames_pick_the_frames_with_the_most_hidden_empty_space(script, synthetic_root, monkeypatch):
    """On the 4-frame set (the group reach lowered to 1, so 3 frames qualify): one frame asked for is the one whose
    cuboid holds the most invisible empty points; more than qualify is refused by path; N < 1 is refused."""
    from bts_studio.data.kitti360.rig import load_rig
    from bts_studio.eval.occupancy_exact import ExactGrid, exact_reference
    from bts_studio.eval.occupancy_protocol import Kitti360Calibration

    oracle = script.oracle
    monkeypatch.setattr(oracle, "FRAME_GROUP_REACH", 1)
    calibration = Kitti360Calibration(synthetic_root, "2013_05_28_drive_0000_sync")
    from bts_studio.data.synthetic.ground_truth import load_ground_truth_scene

    scene = load_ground_truth_scene(synthetic_root, "2013_05_28_drive_0000_sync")
    K = torch.from_numpy(load_rig(synthetic_root, (192, 640), 15.0, 0.0, False).K.copy())
    points = ExactGrid().points().reshape(-1, 3)
    counts = []
    for index in range(len(calibration.frame_ids) - 1):
        c2w = torch.from_numpy(calibration.rectified_camera_to_world(index, 0))
        occupied, visible = exact_reference(scene, points, c2w, K, 640, 192)
        counts.append(int((~visible & ~occupied).sum()))
    best = int(calibration.frame_ids[max(range(len(counts)), key=counts.__getitem__)])
    assert len(set(counts)) == len(counts), counts  # distinct: the choice is not a tie broken by order
    assert oracle.frames_with_hidden_space(synthetic_root, 1) == [best]
    with pytest.raises(ValueError, match=str(synthetic_root)):
        oracle.frames_with_hidden_space(synthetic_root, len(counts) + 1)
    parser = argparse.ArgumentParser()
    oracle.add_frame_arguments(parser)
    args = parser.parse_args(["--hidden-frames", "0"])
    args.data = synthetic_root
    with pytest.raises(SystemExit):
        oracle.resolve_frames(parser, args)
    # A stand-in count per frame (1, 5, 3 points): the middle frame wins, and its neighbours are within 3 frames.
    calls = []

    def fake_reference(scene, query, c2w, K, width, height):
        hidden = [1, 5, 3][len(calls)]
        calls.append(hidden)
        visible = torch.arange(query.shape[0]) >= hidden
        return torch.zeros_like(visible), visible

    monkeypatch.setattr("bts_studio.eval.occupancy_exact.exact_reference", fake_reference)
    assert oracle.frames_with_hidden_space(synthetic_root, 1) == [int(calibration.frame_ids[1])]
    calls.clear()
    with pytest.raises(ValueError, match="3 apart"):
        oracle.frames_with_hidden_space(synthetic_root, 2)
