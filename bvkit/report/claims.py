"""The RIDE slides' claims checked on a study: each holds, fails or is inconclusive, from
paired intervals of differences between methods (``docs/claims.md``).

Every claim is a set of tests; a test is one signed quantity (a split mean of a per-class
difference ``method - versus``, or a difference of two such split means) whose interval must
lie on the claimed side of 0. Intervals come from :func:`bvkit.decomposition.compare.
difference_replicates`, so every test of a study sees the same resampled test samples, and,
for a study decomposed with the population estimator (the default for D >= 3), from
:func:`~bvkit.decomposition.compare.difference_leave_one_out` too: the same training set k left
out of both methods, the two combined by :func:`~bvkit.decomposition.combined_interval`. Claims
1-6 read the study's decomposition; claims 7 and 8 compare RIDE arms that differ in one
setting of their loss, claim 7 through the experts' bias-variance-diversity decomposition.
"""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatch

import numpy as np
import pandas as pd

from bvkit.data.profiles import SPLITS
from bvkit.decomposition import bootstrap as bs
from bvkit.decomposition.compare import difference_leave_one_out, difference_replicates
from bvkit.decomposition.experts import EXPERT_COLUMNS
from bvkit.decomposition.population import combined_interval
from bvkit.decomposition.result import Decomposition
from bvkit.errors import BvkitError
from bvkit.report.study import EXPERT_LOSS

HOLDS, FAILS, INCONCLUSIVE, UNTESTABLE = "holds", "fails", "inconclusive", "untestable"
RIDE_RECIPES = "ride*"  # a method whose recipe matches is "RIDE"; the others but the reference
#                         are the re-balancing baselines
CLAIM_COLUMNS = ["claim", "statement", "verdict", "method", "versus", "metric", "quantity",
                 "expected", "estimate", "lo", "hi", "result"]
# the spec settings (recipe overrides) that make RIDE's ablation arms
COLLABORATIVE = "loss_kwargs.collaborative"
DIVERSITY_WEIGHT = "loss_kwargs.diversity_weight"


@dataclass(frozen=True)
class Test:
    """``sum(weight * split mean of (method - versus) metric)`` expected to have ``sign``."""

    method: str
    versus: str
    metric: str
    weights: tuple[tuple[str, float], ...]  # (split, weight)
    sign: int  # +1: claimed > 0, -1: claimed < 0
    quantity: str


def _each_split(metric, sign, name):
    return lambda m, ref, roles: [Test(m, ref, metric, ((s, 1.0),), sign, f"{s}-shot {name}")
                                  for s in SPLITS]


# number -> (statement, whose claim it is, the tests of one of its methods)
CLAIMS = {
    1: ("the re-balancing baselines gain few-shot accuracy at the cost of many-shot accuracy "
        "(vs the reference)", "baselines",
        lambda m, ref, roles: [Test(m, ref, "accuracy", (("few", 1.0),), +1, "few-shot accuracy"),
                               Test(m, ref, "accuracy", (("many", 1.0),), -1, "many-shot accuracy")]),
    2: ("their bias reduction is greater on tail classes than on head classes", "baselines",
        lambda m, ref, roles: [Test(m, ref, "bias", (("few", 1.0), ("many", -1.0)), -1,
                                    "few-shot minus many-shot bias change")]),
    3: ("their variance is increased throughout the class spectrum", "baselines",
        _each_split("variance", +1, "variance")),
    4: ("RIDE improves accuracy on all three splits", "ride", _each_split("accuracy", +1, "accuracy")),
    5: ("RIDE decreases bias more than the other methods on few-shot classes", "ride",
        lambda m, ref, roles: [Test(m, other, "bias", (("few", 1.0),), -1, "few-shot bias")
                               for other in (ref, *roles["baselines"])]),
    6: ("RIDE reduces variance throughout the class spectrum", "ride",
        _each_split("variance", -1, "variance")),
    # arms: (individual, collaborative) and (with the diversity loss, without it)
    7: ("the individual loss decorrelates RIDE's experts: they are more diverse than with the "
        "collaborative loss", "collaborative",
        lambda arms, ref, roles: [Test(*arms, "diversity", ((s, 1.0),), +1,
                                       f"{s}-shot experts' diversity") for s in SPLITS]),
    8: ("the distribution-aware diversity loss further reduces model bias", "no_diversity",
        lambda arms, ref, roles: [Test(*arms, "bias", ((s, 1.0),), -1, f"{s}-shot bias")
                                  for s in SPLITS]),
}
GROUP_NAMES = {"baselines": "re-balancing baseline", "ride": "RIDE method",
               "collaborative": "pair of RIDE methods with expert logits differing only in "
                                "the collaborative loss",
               "no_diversity": "pair of RIDE methods differing only in a diversity weight of 0"}


def method_roles(recipes: dict, reference: str, *, ride=None, baselines=None) -> dict:
    """``{"ride": [...], "baselines": [...]}``: RIDE is every method whose recipe matches
    ``ride*``, the baselines every other method but ``reference``, unless given."""
    methods = list(recipes)
    for given in (ride, baselines):
        unknown = [m for m in given or () if m not in methods]
        if unknown:
            raise BvkitError(f"unknown method {unknown[0]!r} for the claims "
                             f"(methods: {', '.join(methods)})")
    if ride is None:
        ride = [m for m in methods if m != reference and fnmatch(str(recipes[m]), RIDE_RECIPES)]
    if baselines is None:
        baselines = [m for m in methods if m != reference and m not in ride]
    if reference in [*ride, *baselines]:
        raise BvkitError(f"the reference {reference!r} cannot also be a RIDE method or a baseline")
    return {"ride": list(ride), "baselines": list(baselines)}


def ablation_arms(options: dict, ride, with_experts) -> dict:
    """``{"collaborative": [(individual, collaborative), ...], "no_diversity": [(with,
    without), ...]}``: pairs of RIDE methods whose spec settings (``options``: method ->
    {"method": recipe, overrides..., "seeds": ...}) differ in that one key only, the first
    of a pair without ``loss_kwargs.collaborative`` (or false) and the second with it true,
    resp. the first without a ``loss_kwargs.diversity_weight`` of 0 (absent: the recipe's
    own, not 0 for RIDE) and the second with 0. Claim 7 needs both arms' expert logits
    (``with_experts``)."""
    arms = {"collaborative": [], "no_diversity": []}
    for first in ride:
        for second in ride:
            a, b = options.get(first), options.get(second)
            if first == second or a is None or b is None:
                continue
            differ = {key for key in a.keys() | b.keys() if a.get(key) != b.get(key)}
            if (differ == {COLLABORATIVE} and b.get(COLLABORATIVE) and not a.get(COLLABORATIVE)
                    and {first, second} <= set(with_experts)):
                arms["collaborative"].append((first, second))
            if differ == {DIVERSITY_WEIGHT} and b.get(DIVERSITY_WEIGHT) == 0:
                arms["no_diversity"].append((first, second))
    return arms


def claims_table(frames, *, ride=None, baselines=None, arms=None, bootstrap: int = 1000,
                 seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """One row per test of each claim (``CLAIM_COLUMNS``), the claim's verdict on every row.

    ``frames``: :class:`bvkit.report.StudyFrames`; ``ride`` / ``baselines`` override which
    methods are RIDE and which the re-balancing baselines (default: read from the recipes);
    ``arms`` (``{"collaborative": [(individual, collaborative)], "no_diversity": [(with,
    without)]}``, either key) overrides the pairs of claims 7 and 8 (default:
    :func:`ablation_arms` of the study's spec settings).
    A test holds when its ``level`` interval lies on the claimed side of 0, fails when it
    lies on the other side, is inconclusive when it covers 0 and untestable when a split it
    needs has no classes. A claim fails when any test fails, is untestable when it has no
    method or a test is untestable, holds when every test holds, else is inconclusive.
    """
    bs.check_bootstrap(bootstrap, level)
    if bootstrap < 1:
        raise BvkitError("the claims need bootstrap intervals (bootstrap >= 1)")
    reference = frames.reference
    recipes = frames.recipes or {m: m for m in frames.methods}
    roles = method_roles(recipes, reference, ride=ride, baselines=baselines)
    with_experts = [] if frames.experts is None else frames.experts.methods
    found = ablation_arms(frames.method_options, roles["ride"], with_experts)
    for group, pairs in (arms or {}).items():
        if group not in found:
            raise BvkitError(f"unknown arms {group!r} (choose from {', '.join(found)})")
        unknown = [m for pair in pairs for m in pair if m not in recipes]
        if unknown:
            raise BvkitError(f"unknown method {unknown[0]!r} for the claims "
                             f"(methods: {', '.join(recipes)})")
        found[group] = [tuple(pair) for pair in pairs]
    roles.update(found)
    engine = _Differences(frames, bootstrap, seed, level)
    rows = []
    for number, (statement, group, tests_of) in CLAIMS.items():
        tests = [t for m in roles[group] for t in tests_of(m, reference, roles)]
        results = [engine.test(t) for t in tests]
        verdict = _claim_verdict([r[-1] for r in results])
        head = {"claim": number, "statement": statement, "verdict": verdict}
        if not tests:
            rows.append({**head, "result": UNTESTABLE,
                         "quantity": f"no {GROUP_NAMES[group]} in the study"})
        for t, (estimate, lo, hi, result) in zip(tests, results):
            rows.append({**head, "method": t.method, "versus": t.versus, "metric": t.metric,
                         "quantity": t.quantity, "expected": "> 0" if t.sign > 0 else "< 0",
                         "estimate": estimate, "lo": lo, "hi": hi, "result": result})
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def _claim_verdict(results: list[str]) -> str:
    if FAILS in results:
        return FAILS
    if not results or UNTESTABLE in results:
        return UNTESTABLE
    return HOLDS if all(r == HOLDS for r in results) else INCONCLUSIVE


class _Differences:
    """Point estimates, paired bootstrap replicates and (population estimator) paired
    leave-one-subset-out values of ``method - reference`` per class."""

    def __init__(self, frames, bootstrap: int, seed: int, level: float):
        self.frames, self.bootstrap, self.seed, self.level = frames, bootstrap, seed, level
        self.decomposition = Decomposition(frames.per_sample, frames.per_class, frames.per_split,
                                           leave_one_out=getattr(frames, "leave_one_out", {}))
        self.experts = frames.experts
        classes = frames.per_class[(frames.per_class["method"] == frames.reference)
                                  & (frames.per_class["loss"] == frames.loss)]
        self.split_of = classes["split"].to_numpy().astype(str)
        self._cache = {}

    def _vs_reference(self, method: str, metric: str):
        """(class differences (C,), replicates (B, C), leave-one-out (D, C), 0 for the
        reference itself, or None without the population estimator) of ``method -
        reference``."""
        key = (method, metric)
        if key not in self._cache:
            frame = self.frames.per_class
            frame = frame[frame["loss"] == self.frames.loss]
            values = frame[frame["method"] == method][metric].to_numpy(float)
            ref = frame[frame["method"] == self.frames.reference][metric].to_numpy(float)
            if method == self.frames.reference:
                reps = np.zeros((self.bootstrap, len(ref)))
                jack = 0.0 if self.decomposition.leave_one_out else None
            else:
                reps = difference_replicates(self.decomposition, method, self.frames.reference,
                                             metric, bootstrap=self.bootstrap, seed=self.seed,
                                             loss=self.frames.loss)
                jack = difference_leave_one_out(self.decomposition, method,
                                                self.frames.reference, metric,
                                                loss=self.frames.loss)
            self._cache[key] = (values - ref, reps, jack)
        return self._cache[key]

    def _between_experts(self, method: str, versus: str, metric: str):
        """(class differences (C,), replicates (B, C)) of ``method - versus`` in the experts'
        decomposition (the same resampled test samples), or None without expert logits."""
        key = (method, versus, metric)
        if key not in self._cache:
            if self.experts is None or not {method, versus} <= set(self.experts.methods):
                return None
            frame = self.experts.per_class
            loss = EXPERT_LOSS if EXPERT_LOSS in self.experts.losses else self.experts.losses[0]
            values = {m: frame[(frame["method"] == m) & (frame["loss"] == loss)][metric]
                      .to_numpy(float) for m in (method, versus)}
            reps = difference_replicates(self.experts, method, versus, metric,
                                         bootstrap=self.bootstrap, seed=self.seed, loss=loss)
            jack = difference_leave_one_out(self.experts, method, versus, metric, loss=loss)
            self._cache[key] = (values[method] - values[versus], reps, jack)
        return self._cache[key]

    def test(self, t: Test) -> tuple[float, float, float, str]:
        if t.metric in EXPERT_COLUMNS:
            found = self._between_experts(t.method, t.versus, t.metric)
            if found is None:
                return np.nan, np.nan, np.nan, UNTESTABLE
            diff, reps, jack = found
        else:
            diff, reps, jack = self._vs_reference(t.method, t.metric)
            other_diff, other_reps, other_jack = self._vs_reference(t.versus, t.metric)
            diff, reps = diff - other_diff, reps - other_reps
            jack = None if jack is None or other_jack is None else jack - other_jack
        estimate, combined, left_out = 0.0, np.zeros(reps.shape[0]), 0.0
        for split, weight in t.weights:
            members = self.split_of == split
            if not members.any():
                return np.nan, np.nan, np.nan, UNTESTABLE
            estimate += weight * diff[members].mean()
            combined += weight * reps[:, members].mean(axis=1)
            if jack is not None:
                left_out = left_out + weight * jack[:, members].mean(axis=1)
        if jack is None:
            lo, hi = (float(v[0]) for v in bs.intervals(combined[:, None], self.level))
        else:
            lo, hi = (float(v[0]) for v in combined_interval(
                np.array([estimate]), np.asarray(left_out)[:, None], combined[:, None],
                self.level))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return float(estimate), lo, hi, UNTESTABLE
        if lo <= 0.0 <= hi:
            result = INCONCLUSIVE
        else:
            result = HOLDS if (lo > 0) == (t.sign > 0) else FAILS
        return float(estimate), lo, hi, result


def format_claims(table: pd.DataFrame, reference: str = "ce") -> pd.DataFrame:
    """One row per claim: Claim, Verdict, Evidence (each test's estimate [interval] and result;
    accuracy in percentage points)."""
    rows = []
    for number, part in table.groupby("claim", sort=True):
        evidence = []
        for r in part.itertuples(index=False):
            if pd.isna(r.method):
                evidence.append(str(r.quantity))
                continue
            versus = "" if r.versus == reference else f" vs {r.versus}"
            numbers = ("no classes" if pd.isna(r.estimate) else
                       f"{_number(r.estimate, r.metric)} [{_number(r.lo, r.metric)}, "
                       f"{_number(r.hi, r.metric)}]")
            evidence.append(f"{r.method}{versus} {r.quantity} {numbers} {r.result}")
        rows.append({"Claim": f"{number}. {part['statement'].iloc[0]}",
                     "Verdict": part["verdict"].iloc[0].upper(), "Evidence": "; ".join(evidence)})
    return pd.DataFrame(rows, columns=["Claim", "Verdict", "Evidence"])


def _number(value: float, metric: str) -> str:
    return f"{100 * value:+.1f} pp" if metric == "accuracy" else f"{value:+.3f}"


def claims_summary(table: pd.DataFrame) -> list[str]:
    """One short line per claim ("1 holds: the re-balancing baselines gain ...")."""
    return [f"  {number}. {part['verdict'].iloc[0].upper():<12} {part['statement'].iloc[0]}"
            for number, part in table.groupby("claim", sort=True)]
