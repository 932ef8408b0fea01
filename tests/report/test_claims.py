"""The slides' claims on constructed frames whose answer is known (docs/claims.md)."""

import numpy as np
import pandas as pd
import pytest

from bvkit.data.profiles import shot_splits
from bvkit.errors import BvkitError
from bvkit.report import StudyFrames, claims_table, format_claims
from bvkit.report.claims import FAILS, HOLDS, INCONCLUSIVE, UNTESTABLE

COUNTS = np.array([500, 300, 200, 150, 80, 60, 40, 30, 15, 10, 8, 5])  # 4 / 4 / 4
TEST = 40


def frames(effects, counts=COUNTS, recipes=None, noise=0.3, seed=0):
    """StudyFrames of methods whose per-sample accuracy / bias / variance are the reference's
    plus ``effects[method][metric][split]`` (a shift of each split's classes) plus noise."""
    rng = np.random.default_rng(seed)
    split = shot_splits(counts)
    labels = np.repeat(np.arange(len(counts)), TEST)
    base = {m: rng.uniform(0.2, 0.6, labels.size) for m in ("accuracy", "bias", "variance")}
    samples = []
    for method in ["ce", *effects]:
        values = {}
        for metric, start in base.items():
            shift = np.array([effects.get(method, {}).get(metric, {}).get(s, 0.0) for s in split])
            values[metric] = start + shift[labels] + noise * rng.normal(size=labels.size)
        samples.append(pd.DataFrame({"method": method, "loss": "squared",
                                     "sample": np.arange(labels.size), "class": labels,
                                     **values, "error": values["bias"] + values["variance"]}))
    return study_frames(pd.concat(samples, ignore_index=True), counts, recipes)


def study_frames(per_sample, counts=COUNTS, recipes=None):
    """StudyFrames of these per-sample values: their class and split means (reference ``ce``)."""
    split = shot_splits(counts)
    methods = list(dict.fromkeys(per_sample["method"]))
    per_class = per_sample.groupby(["method", "loss", "class"], as_index=False, sort=False)[
        ["accuracy", "error", "bias", "variance"]].mean()
    per_class["train_count"] = counts[per_class["class"]]
    per_class["split"] = split[per_class["class"]]
    per_class["n_test"] = TEST
    per_split = per_class.groupby(["method", "loss", "split"], as_index=False)[["accuracy"]].mean()
    return StudyFrames(directory=None, loss="squared", reference="ce", per_sample=per_sample,
                       per_class=per_class, per_split=per_split, split_differences=None,
                       split_accuracy=None, metrics=None, expert_usage=None,
                       recipes=recipes or {m: ("ride-ea" if m.startswith("ride") else m)
                                           for m in methods})


def each(value):
    return {s: value for s in ("many", "medium", "few")}


# the slides' story, strongly: baselines trade head accuracy for tail accuracy, cut tail bias
# far more than head bias and raise variance everywhere; RIDE is better everywhere
SLIDES = {
    "ldam": {"accuracy": {"many": -0.3, "medium": 0.1, "few": 0.4},
             "bias": {"many": -0.05, "medium": -0.2, "few": -0.5}, "variance": each(0.3)},
    "ride": {"accuracy": each(0.3), "bias": {"many": -0.2, "medium": -0.4, "few": -0.9},
             "variance": each(-0.3)},
}


def verdicts(table):
    """The slides' six claims on the study's decomposition (7 and 8 need RIDE arms: below)."""
    found = table.groupby("claim")["verdict"].first().to_dict()
    assert found.pop(7) == found.pop(8) == UNTESTABLE  # these frames have no ablation arms
    return found


def test_every_claim_holds_on_frames_built_to_the_slides_story():
    table = claims_table(frames(SLIDES), bootstrap=200)
    assert verdicts(table) == dict.fromkeys(range(1, 7), HOLDS)
    row = table[(table["claim"] == 1) & (table["quantity"] == "few-shot accuracy")].iloc[0]
    assert row["method"] == "ldam" and row["lo"] > 0 and abs(row["estimate"] - 0.4) < 0.1
    assert set(table.loc[table["claim"] == 5, "versus"]) == {"ce", "ldam"}


def test_claims_fail_when_the_data_say_the_opposite():
    opposite = {m: {k: {s: -v for s, v in d.items()} for k, d in e.items()}
                for m, e in SLIDES.items()}
    table = claims_table(frames(opposite), bootstrap=200)
    assert verdicts(table) == dict.fromkeys(range(1, 7), FAILS)


def test_one_failing_method_or_split_fails_the_claim():
    effects = {**SLIDES, "ride": {**SLIDES["ride"], "variance": {"many": 0.3, "medium": -0.3,
                                                                  "few": -0.3}}}
    table = claims_table(frames(effects), bootstrap=200)
    assert verdicts(table)[6] == FAILS
    claim6 = table[table["claim"] == 6].set_index("quantity")["result"]
    assert claim6["many-shot variance"] == FAILS and claim6["few-shot variance"] == HOLDS
    assert verdicts(table)[4] == HOLDS


def test_no_difference_is_inconclusive():
    # methods whose samples are the reference's own, shuffled within each class: every class
    # mean, so every estimated difference, is exactly 0, while the paired bootstrap resamples a
    # real spread (noise 0.3): each claim, and each quantity under it, is inconclusive
    reference = frames({}, noise=0.3).per_sample
    shuffled = []
    for method, seed in (("ldam", 1), ("ride", 2)):
        permuted = reference.groupby("class", group_keys=False).sample(frac=1, random_state=seed)
        assert (permuted["class"].to_numpy() == reference["class"].to_numpy()).all()
        terms = ("accuracy", "bias", "variance", "error")
        shuffled.append(reference.assign(method=method, **{t: permuted[t].to_numpy() for t in terms}))
    study = study_frames(pd.concat([reference, *shuffled], ignore_index=True))
    table = claims_table(study, bootstrap=200)
    assert verdicts(table) == dict.fromkeys(range(1, 7), INCONCLUSIVE)
    tested = table[table["claim"] <= 6]
    assert (tested["result"] == INCONCLUSIVE).all() and np.allclose(tested["estimate"], 0, atol=1e-12)
    assert ((tested["lo"] < -0.01) & (tested["hi"] > 0.01)).all()  # intervals of real width

    # independent noise and no effect: a quantity fails only by chance (95% intervals), a claim
    # never holds
    noisy = claims_table(frames({"ldam": {}, "ride": {}}, noise=0.3), bootstrap=200)
    assert HOLDS not in verdicts(noisy).values()
    assert (noisy.loc[noisy["claim"] <= 6, "result"] == INCONCLUSIVE).mean() > 0.7
    tiny = claims_table(frames({"ldam": {}, "ride": {}}, noise=0.0), bootstrap=50)
    # identical methods: every interval is [0, 0]
    assert (tiny.loc[tiny["claim"] <= 6, "result"] == INCONCLUSIVE).all()


def test_a_split_without_classes_makes_its_claims_untestable():
    no_few = np.array([500, 300, 200, 150, 80, 60, 40, 30])
    table = claims_table(frames(SLIDES, counts=no_few), bootstrap=100)
    v = verdicts(table)
    assert v[2] == v[5] == UNTESTABLE and v[4] == UNTESTABLE
    assert table.loc[(table["claim"] == 5), "estimate"].isna().all()
    shown = format_claims(table)
    assert "no classes" in shown.loc[shown["Claim"].str.startswith("5."), "Evidence"].iloc[0]


def test_roles_come_from_the_recipes_and_can_be_overridden():
    study = frames(SLIDES, recipes={"ce": "ce", "ldam": "ldam-drw", "ride": "ride-ea"})
    table = claims_table(study, bootstrap=50)
    assert set(table.loc[table["claim"] <= 3, "method"]) == {"ldam"}
    assert set(table.loc[table["claim"].between(4, 6), "method"]) == {"ride"}
    swapped = claims_table(study, ride=["ldam"], baselines=["ride"], bootstrap=50)
    assert set(swapped.loc[swapped["claim"].between(4, 6), "method"]) == {"ldam"}
    no_ride = claims_table(study, ride=[], bootstrap=50)
    assert verdicts(no_ride)[4] == UNTESTABLE
    assert "no RIDE method" in format_claims(no_ride)["Evidence"].iloc[3]
    with pytest.raises(BvkitError, match="unknown method 'bbn'"):
        claims_table(study, ride=["bbn"], bootstrap=50)
    with pytest.raises(BvkitError, match="bootstrap"):
        claims_table(study, bootstrap=0)
