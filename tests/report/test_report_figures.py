import matplotlib
import numpy as np
import pandas as pd
import pytest

from bvkit.errors import BvkitError
from bvkit.report import figures
from bvkit.report.style import method_palette



def artist(fig, gid):
    found = [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {len(found)} artists"
    return found[0]


def head_to_tail(per_class):
    classes = per_class.drop_duplicates("class")
    return classes.sort_values(["train_count", "class"], ascending=[False, True])


def rolling(values, window):
    return pd.Series(values).rolling(window, center=True, min_periods=1).mean().to_numpy()


def test_class_difference_points_equal_frame(frames):
    per_sample, per_class, _ = frames
    fig = figures.plot_class_difference(per_class, "accuracy", "ce", per_sample=per_sample,
                                        bootstrap=50, seed=1, window=3)
    order = head_to_tail(per_class)["class"].to_numpy()
    table = per_class.pivot(index="class", columns="method", values="accuracy")
    for method in ("ldam", "ride"):
        expected = (table.loc[order, method] - table.loc[order, "ce"]).to_numpy() * 100
        points = artist(fig, f"classes:{method}")
        np.testing.assert_array_equal(points.get_xdata(), np.arange(len(order)))
        np.testing.assert_allclose(points.get_ydata(), expected)
        smooth = artist(fig, f"smooth:{method}")
        np.testing.assert_allclose(smooth.get_ydata(), rolling(expected, 3))
    with pytest.raises(AssertionError):
        artist(fig, "classes:ce")  # the reference is not plotted against itself


def test_split_bands_sit_at_class_boundaries(frames):
    _, per_class, _ = frames
    fig = figures.plot_class_difference(per_class, "bias", "ce")
    splits = head_to_tail(per_class)["split"].to_numpy()
    # a head-to-tail order keeps each split contiguous
    for split in ("many", "medium", "few"):
        ranks = np.flatnonzero(splits == split)
        assert np.array_equal(ranks, np.arange(ranks[0], ranks[-1] + 1))
        box = artist(fig, f"split:{split}").get_bbox()
        assert (box.x0, box.x1) == pytest.approx((ranks[0] - 0.5, ranks[-1] + 0.5))
    assert fig.axes[0].get_xlim() == pytest.approx((-0.5, len(splits) - 0.5))


def test_bootstrap_band_is_exact_for_constant_differences(frames):
    per_sample, per_class, _ = frames
    shifted = per_sample[per_sample["method"] == "ce"].assign(method="shifted")
    shifted["bias"] = shifted["bias"] - 0.05  # every sample exactly 0.05 lower
    same = per_sample[per_sample["method"] == "ce"].assign(method="same")
    samples = pd.concat([per_sample, shifted, same], ignore_index=True)
    classes = samples.groupby(["method", "class"], as_index=False)["bias"].mean()
    meta = per_class.drop_duplicates("class")[["class", "train_count", "split"]]
    classes = classes.merge(meta, on="class")
    fig = figures.plot_class_difference(classes, "bias", "ce", per_sample=samples, bootstrap=100)
    lo_hi = {m: artist(fig, f"band:{m}").get_paths()[0].vertices[:, 1] for m in ("shifted", "same")}
    np.testing.assert_allclose(lo_hi["shifted"], -0.05, atol=1e-12)
    np.testing.assert_allclose(lo_hi["same"], 0.0, atol=1e-12)
    noisy = artist(fig, "band:ride").get_paths()[0].vertices[:, 1]
    assert np.ptp(noisy) > 0


def test_bootstrap_band_is_seeded_and_brackets_smooth(frames):
    per_sample, per_class, _ = frames
    def band(seed):
        fig = figures.plot_class_difference(per_class, "variance", "ce", per_sample=per_sample,
                                            bootstrap=200, seed=seed)
        return artist(fig, "band:ride").get_paths()[0].vertices[:, 1], artist(fig, "smooth:ride").get_ydata()
    (a, smooth), (b, _), (c, _) = band(3), band(3), band(4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    n = len(smooth)
    lower, upper = a[1:n + 1], a[n + 2:2 * n + 2][::-1]  # fill_between polygon: lower, then upper reversed
    assert np.all(lower <= upper + 1e-12)
    inside = np.mean((lower - 1e-12 <= smooth) & (smooth <= upper + 1e-12))
    assert inside > 0.8


def test_split_bars_heights_and_intervals_equal_frame(frames):
    _, _, per_split = frames
    fig = figures.plot_split_bars(per_split, ("accuracy", "bias", "variance"))
    rows = per_split.set_index(["method", "split"])
    for metric in ("accuracy", "bias", "variance"):
        scale = 100 if metric == "accuracy" else 1
        for (method, split), row in rows.iterrows():
            bar = artist(fig, f"bar:{metric}:{method}:{split}")
            assert bar.get_height() == pytest.approx(row[metric] * scale)
            segment = artist(fig, f"err:{metric}:{method}:{split}")
            ys = segment.get_segments()[0][:, 1]
            assert ys == pytest.approx([row[f"{metric}_lo"] * scale, row[f"{metric}_hi"] * scale])


def test_metric_overview_uses_given_split_differences(frames):
    per_sample, per_class, per_split = frames
    diffs = pd.DataFrame({"method": ["ldam", "ride"] * 2, "split": ["many", "many", "few", "few"],
                          "metric": "bias", "diff": [0.1, -0.2, 0.3, -0.4],
                          "diff_lo": [0.0, -0.3, 0.2, -0.5], "diff_hi": [0.2, -0.1, 0.4, -0.3]})
    fig = figures.plot_metric_overview(per_class, per_split, "bias", "ce", split_differences=diffs,
                                       per_sample=per_sample, bootstrap=30)
    for row in diffs.itertuples():
        assert artist(fig, f"bar:bias:{row.method}:{row.split}").get_height() == pytest.approx(row.diff)
    # panel (a): every method's per-class bias, head to tail
    order = head_to_tail(per_class)["class"].to_numpy()
    points = [a for a in fig.axes[0].get_lines() if a.get_gid() == "classes:ce"][0]
    expected = per_class[per_class["method"] == "ce"].set_index("class").loc[order, "bias"]
    np.testing.assert_allclose(points.get_ydata(), expected.to_numpy())


def test_metric_overview_bootstraps_split_differences(frames):
    per_sample, per_class, per_split = frames
    fig = figures.plot_metric_overview(per_class, per_split, "variance", "ce",
                                       per_sample=per_sample, bootstrap=100)
    ref = per_split[per_split["method"] == "ce"].set_index("split")["variance"]
    ride = per_split[per_split["method"] == "ride"].set_index("split")["variance"]
    for split in ("many", "medium", "few", "all"):
        bar = artist(fig, f"bar:variance:ride:{split}")
        assert bar.get_height() == pytest.approx(ride[split] - ref[split])
        artist(fig, f"err:variance:ride:{split}")


def test_expert_usage_stacks_mean_shares():
    usage = pd.DataFrame([
        {"method": "ride-3", "subset": s, "split": split, "n_experts": k, "share": share + 0.02 * s * (k == 1) - 0.02 * s * (k == 3)}
        for s in range(2) for split, shares in {"many": (0.6, 0.3, 0.1), "few": (0.2, 0.3, 0.5)}.items()
        for k, share in zip((1, 2, 3), shares)])
    fig = figures.plot_expert_usage(usage)
    means = usage.groupby(["split", "n_experts"])["share"].mean() * 100
    for split in ("many", "few"):
        bottom = 0.0
        for k in (1, 2, 3):
            bar = artist(fig, f"expert:ride-3:{split}:{k}")
            assert bar.get_height() == pytest.approx(means[(split, k)])
            assert bar.get_y() == pytest.approx(bottom)
            bottom += means[(split, k)]
        assert bottom == pytest.approx(100)
    with pytest.raises(BvkitError):
        figures.plot_expert_usage(usage.iloc[0:0])


def test_palette_is_shared_and_figures_are_paper_sized(frames):
    per_sample, per_class, per_split = frames
    palette = method_palette(per_class["method"], "ce")
    assert len(set(palette.values())) == len(palette)
    made = [
        figures.plot_class_difference(per_class, palette=palette),
        figures.plot_metric_overview(per_class, per_split, "bias", palette=palette),
        figures.plot_metric_overview(per_class, per_split, "variance", palette=palette),
        figures.plot_split_bars(per_split, palette=palette),
    ]
    assert made[0].get_figwidth() == pytest.approx(3.3)
    assert all(f.get_figwidth() == pytest.approx(7.0) for f in made[1:])
    for fig in made:
        fig.canvas.draw()
        for line in (a for ax in fig.axes for a in ax.get_lines() if (a.get_gid() or "").startswith("smooth:")):
            assert matplotlib.colors.same_color(line.get_color(), palette[line.get_gid().split(":")[1]])
        for bar in (a for ax in fig.axes for a in ax.patches if (a.get_gid() or "").startswith("bar:")):
            assert matplotlib.colors.same_color(bar.get_facecolor(), palette[bar.get_gid().split(":")[2]])
        texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text()]
        assert min(t.get_fontsize() for t in texts) >= 7
        for ax in fig.axes:
            assert ax.get_xlabel() and ax.get_ylabel()


def test_bad_frames_raise_one_line_errors(frames):
    _, per_class, _ = frames
    with pytest.raises(BvkitError, match="reference method 'erm'"):
        figures.plot_class_difference(per_class, reference="erm")
    with pytest.raises(BvkitError, match="lacks column"):
        figures.plot_class_difference(per_class.drop(columns="train_count"))
    two_losses = pd.concat([per_class, per_class.assign(loss="zero-one")])
    with pytest.raises(BvkitError, match="several losses"):
        figures.plot_class_difference(two_losses)
    fig = figures.plot_class_difference(two_losses, loss="zero-one")
    assert artist(fig, "classes:ride")


def test_save_figure_writes_each_format(tmp_path, frames):
    _, per_class, _ = frames
    paths = figures.save_figure(figures.plot_class_difference(per_class), tmp_path / "f", ("png", "pdf"))
    assert [p.name for p in paths] == ["f.png", "f.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
