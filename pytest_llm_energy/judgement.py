"""The regression gate judged at the level that fails the build: the whole run.

A comparison run has many tests, each measured a few times in a baseline and
in the current run. Judging each test alone at a fixed confidence makes the
*run* flake: with 20 tests and 3 energy metrics, sixty 1% chances add up. So:

* **Noise per test.** Each test gets its own noise estimate (log scale, from
  residuals winsorised at 3 robust deviations so one spike does not widen
  it), moderated towards the run's typical noise by empirical Bayes (Smyth's
  limma: the per-test variances are taken as drawn from a scaled inverse
  chi-square prior whose scale and degrees of freedom are fitted to all
  tests), and floored by the meter's own error bound where it reports one.
* **Correlated repetitions.** Back-to-back repetitions share slow noise. The
  lag-1 autocorrelation of residuals, pooled over every test, inflates each
  test's variance as an AR(1) process would.
* **Warm-up.** When the first repetition is high in most tests of a run side
  (a sign test at 1%), it is dropped there.
* **One shift for the run.** A machine a few percent off moves every test
  alike. The run's shift is the median of the tests' shifts, judged once;
  each test is judged by its change *relative to that shift*.
* **Family-wise control.** Every bounded comparison of the session (the run's
  shift, each suite total, each test, for every bounded metric) yields a
  one-sided p-value against its bound, and Holm's step-down procedure keeps
  the chance that an unchanged session fails at most ``alpha`` (1%),
  whatever their number. Holm costs power against a single test: it needs
  about 3.3 standard errors instead of 2.3 with 20 tests; the report says
  how many repetitions would catch a given regression.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist, median
from typing import Mapping, Optional, Sequence

from .stats import t_quantile

FAMILY_ALPHA = 0.01
WINSOR = 3.0
MAX_PRIOR_DF = 1000.0
RHO_MARGIN = 0.5  # standard errors added to the pooled lag-1 ratio (see model_metric)
# A uniform shift of the whole run up to this much is the machine's (another GPU,
# another day): reported, and judged against this instead of a smaller bound.
DEFAULT_RUN_TOLERANCE = 0.05


def hl_factor(m: int, n: int) -> float:
    """Var(Hodges-Lehmann shift) / (σ²(1/m + 1/n)) under normal noise: π/3, more for small samples."""
    return math.pi / 3 + 0.8 / (m + n)


# -- special functions ----------------------------------------------------------
def digamma(x: float) -> float:
    result = 0.0
    while x < 6.0:
        result -= 1.0 / x
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    return result + math.log(x) - 0.5 * inv - inv2 * (1 / 12 - inv2 * (1 / 120 - inv2 / 252))


def trigamma(x: float) -> float:
    result = 0.0
    while x < 6.0:
        result += 1.0 / (x * x)
        x += 1.0
    inv = 1.0 / x
    inv2 = inv * inv
    return result + inv + inv2 / 2 + inv * inv2 * (1 / 6 - inv2 * (1 / 30 - inv2 / 42))


def _inverse_trigamma(y: float) -> float:
    """x with trigamma(x) = y (Newton's method on 1/x, as limma does)."""
    x = 0.5 + 1.0 / y
    for _ in range(50):
        tri = trigamma(x)
        step = tri * (1 - tri / y) / _tetragamma(x)
        x += step
        if abs(step / x) < 1e-8:
            break
    return x


def _tetragamma(x: float) -> float:
    h = 1e-4 * max(x, 1.0)
    return (trigamma(x + h) - trigamma(x - h)) / (2 * h)


def student_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (normal beyond 1000)."""
    if df >= 1000 or math.isinf(df):
        return 1.0 - NormalDist().cdf(t)
    # Regularised incomplete beta via continued fraction.
    x = df / (df + t * t)
    tail = 0.5 * _betainc(df / 2, 0.5, x)
    return tail if t > 0 else 1.0 - tail


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((a + m2 - 1) * (a + m2)),
                    -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-12:
            break
    return h


# -- the model ------------------------------------------------------------------------
@dataclass(frozen=True)
class TestShift:
    """One test's change between runs, on the log scale, before the run's shift is removed."""

    scope: str
    shift: float          # Hodges-Lehmann shift of log values
    variance: float       # of the shift, after moderation, correlation and floor
    df: float
    sigma: float          # the test's moderated noise (log scale, one repetition)
    n_baseline: int
    n_current: int
    baseline: float       # medians, in the metric's units
    current: float


@dataclass(frozen=True)
class RunModel:
    """What the run's tests say together about one metric."""

    metric: str
    tests: list[TestShift]
    run_shift: float
    run_variance: float
    prior_sigma: float
    prior_df: float
    autocorrelation: float
    dropped_warmup: tuple[str, ...] = ()  # "baseline", "current"
    run_df: float = MAX_PRIOR_DF
    cross_correlation: float = 0.0   # of neighbouring generations of different tests
    design_effect: float = 1.0       # the run variance's inflation for it

    def relative(self, test: TestShift) -> tuple[float, float]:
        """A test's shift beyond the run's, and its variance."""
        return test.shift - self.run_shift, test.variance + self.run_variance


@dataclass(frozen=True)
class Verdict:
    scope: str            # "run", "suite NAME" or a test id
    metric: str
    bound: float          # relative, 0.10 = +10%
    estimate: float       # relative change judged (a test's: beyond the run's shift)
    low: float            # family-wise interval (Holm's level for this comparison)
    high: float
    p_value: float
    failed: bool = False
    power: Optional[float] = None          # chance to catch ``target`` beyond the bound
    repeats_needed: Optional[int] = None   # repetitions per side for 95% of that


def _residuals(logs: Sequence[float]) -> list[float]:
    centre = median(logs)
    return [x - centre for x in logs]


def _winsorised_variance(logs: Sequence[float], scale: float) -> float:
    if len(logs) < 2:
        return 0.0
    mean = sum(logs) / len(logs)
    cap = WINSOR * scale if scale > 0 else math.inf
    clipped = [mean + max(-cap, min(cap, x - mean)) for x in logs]
    mean = sum(clipped) / len(clipped)
    return sum((x - mean) ** 2 for x in clipped) / (len(clipped) - 1)


def _ar1_factor(rho: float, n: int) -> float:
    """Var(mean of n AR(1) values) / (σ²/n)."""
    return 1 + 2 * sum((1 - k / n) * rho ** k for k in range(1, n))


def _lag1_ratio(rho: float, n: int) -> float:
    """E[Σ c_i c_{i+1}] / E[Σ c_i²] of a mean-centred AR(1) series of length ``n``."""
    cov = [[rho ** abs(i - j) for j in range(n)] for i in range(n)]
    row = [sum(r) / n for r in cov]
    total = sum(row) / n
    centred = [[cov[i][j] - row[i] - row[j] + total for j in range(n)] for i in range(n)]
    return sum(centred[i][i + 1] for i in range(n - 1)) / sum(centred[i][i] for i in range(n))


def estimate_rho(products: float, squares: float, lengths: Sequence[int], margin: float = 0.0) -> float:
    """The AR(1) coefficient whose expected lag-1 ratio matches the pooled one (0 to 0.95).

    The lag-1 autocorrelation of a mean-centred series of 5 is biased far below
    the truth (about -0.08 for ρ = 0.6), so the pooled ratio is matched to its
    expectation instead of corrected by a rule of thumb. ``margin`` standard
    errors are added to the observed ratio first: an upper confidence value.
    """
    if squares <= 0 or not lengths:
        return 0.0
    observed = products / squares
    if margin:
        pairs = sum(n - 1 for n in lengths)
        observed += margin * math.sqrt(max(1 - observed * observed, 0.0) / pairs)
    counts: dict[int, int] = {}
    for n in lengths:
        counts[n] = counts.get(n, 0) + 1

    def expected(rho: float) -> float:
        # Series weigh in by their lag pairs, as they do in the pooled ratio.
        pairs = sum(c * (n - 1) for n, c in counts.items())
        return sum(c * (n - 1) * _lag1_ratio(rho, n) for n, c in counts.items()) / pairs

    if observed <= expected(0.0):
        return 0.0
    low, high = 0.0, 0.95
    if observed >= expected(high):
        return high
    for _ in range(40):
        mid = (low + high) / 2
        if expected(mid) < observed:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def _drop_warmup(groups: Mapping[str, Sequence[float]]) -> bool:
    """Whether the first repetition is high in most tests (a one-sided sign test at 1%)."""
    signs = []
    for values in groups.values():
        if len(values) >= 3:
            rest = median(values[1:])
            if values[0] != rest:
                signs.append(values[0] > rest)
    n = len(signs)
    if n < 5:
        return False
    high = sum(signs)
    # P(at least `high` of n) under a fair coin.
    tail = sum(math.comb(n, k) for k in range(high, n + 1)) / 2 ** n
    return tail < 0.01


def moderated_prior(variances: Sequence[float], dfs: Sequence[float]) -> tuple[float, float]:
    """Prior (s0², d0) of per-test variances, by Smyth's method of moments on log variances."""
    points = [(v, d) for v, d in zip(variances, dfs) if v > 0 and d > 0]
    if not points:
        return 0.0, 0.0
    e = [math.log(v) - digamma(d / 2) + math.log(d / 2) for v, d in points]
    mean_e = sum(e) / len(e)
    if len(points) < 3:
        return math.exp(mean_e), MAX_PRIOR_DF if len(points) > 1 else 0.0
    excess = sum((x - mean_e) ** 2 for x in e) / (len(e) - 1) - sum(trigamma(d / 2) for _, d in points) / len(points)
    if excess <= 0:
        d0 = MAX_PRIOR_DF
    else:
        d0 = min(2 * _inverse_trigamma(excess), MAX_PRIOR_DF)
    s0 = math.exp(mean_e + digamma(d0 / 2) - math.log(d0 / 2)) if d0 < MAX_PRIOR_DF else math.exp(mean_e)
    return s0, d0


Positions = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def model_metric(metric: str, pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                 floors: Mapping[str, float] = {}, positions: Optional[Positions] = None) -> Optional[RunModel]:
    """The run model of one metric from each test's (baseline, current) values in repetition order.

    ``floors`` gives a test's smallest plausible noise (relative), say from the
    meter's error bound. ``positions`` gives each value's place in its run's
    execution order (any increasing numbers); without it the tests are taken
    to have run one after another, each repetition back to back.
    """
    if positions is None:
        positions = _back_to_back(pairs)
    placed = {t: tuple([(v, p) for v, p in zip(values, positions[t][side]) if v > 0] for side, values in enumerate(pair))
              for t, pair in pairs.items()}
    placed = {t: (b, c) for t, (b, c) in placed.items() if b and c}
    if not placed:
        return None
    dropped = [side for index, side in enumerate(("baseline", "current"))
               if _drop_warmup({t: [v for v, _ in pair[index]] for t, pair in placed.items()})]
    if dropped:
        # Dropped on both sides alike, or the comparison would be lopsided.
        placed = {t: (b[1:] if len(b) > 1 else b, c[1:] if len(c) > 1 else c) for t, (b, c) in placed.items()}
    logs = {t: ([math.log(v) for v, _ in b], [math.log(v) for v, _ in c]) for t, (b, c) in placed.items()}
    where = {t: ([p for _, p in b], [p for _, p in c]) for t, (b, c) in placed.items()}
    # A robust scale per test, from the median absolute residual of both sides.
    raw_var: dict[str, float] = {}
    dfs: dict[str, float] = {}
    products = squares = 0.0
    lengths = []
    for t, (b, c) in logs.items():
        residuals = [abs(r) for r in _residuals(b) + _residuals(c) if r != 0]
        scale = 1.4826 * median(residuals) if residuals else 0.0
        df = max(len(b) - 1, 0) + max(len(c) - 1, 0)
        if df > 0:
            pooled = ((len(b) - 1) * _winsorised_variance(b, scale) if len(b) > 1 else 0.0) + \
                     ((len(c) - 1) * _winsorised_variance(c, scale) if len(c) > 1 else 0.0)
            raw_var[t], dfs[t] = pooled / df, df
        for side in (b, c):
            if len(side) >= 3:
                mean = sum(side) / len(side)
                centred = [x - mean for x in side]
                products += sum(x * y for x, y in zip(centred, centred[1:]))
                squares += sum(x * x for x in centred)
                lengths.append(len(side))
    rho = estimate_rho(products, squares, lengths)
    # The variances use an upper confidence value of ρ: with 40 short series its
    # estimate scatters by ±0.15, and an underestimate shrinks every test's
    # variance at once, which is how correlated repetitions fail whole runs.
    rho_used = estimate_rho(products, squares, lengths, margin=RHO_MARGIN)
    s0, d0 = moderated_prior(list(raw_var.values()), list(dfs.values()))
    tests = []
    for t, (b, c) in logs.items():
        df = dfs.get(t, 0.0)
        s2 = raw_var.get(t, 0.0)
        moderated = (d0 * s0 + df * s2) / (d0 + df) if d0 + df > 0 else 0.0
        m, n = len(b), len(c)
        # AR(1): the sample variance misses part of the slow noise; the mean carries more of it.
        fm, fn = _ar1_factor(rho_used, m), _ar1_factor(rho_used, n)
        if rho_used > 0 and m + n > 2:
            # E[s²] / σ² of an AR(1) series of length n is (n - f) / (n - 1).
            moderated /= max(((m - fm) + (n - fn)) / (m + n - 2), 0.2)
        floor = floors.get(t, 0.0)
        sigma2 = max(moderated, floor * floor)
        variance = hl_factor(m, n) * sigma2 * (fm / m + fn / n)
        diffs = sorted(y - x for x in b for y in c)
        tests.append(TestShift(t, median(diffs), variance, d0 + df, math.sqrt(sigma2), m, n,
                               math.exp(median(b)), math.exp(median(c))))
    run_shift, run_var, run_df, weights = random_effects_centre([t.shift for t in tests], [t.variance for t in tests])
    # Noise that outlasts one generation reaches the next test too (in rounds,
    # the neighbours of every repetition are other tests): the tests' shifts are
    # then correlated and the centre varies more than their spread says.
    phi = cross_test_correlation(logs, where, {t.scope: t.sigma for t in tests})
    effect = design_effect(tests, where, weights, phi)
    return RunModel(metric, tests, run_shift, run_var * effect, math.sqrt(s0), d0, rho, tuple(dropped), run_df,
                    phi, effect)


def _back_to_back(pairs: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> dict[str, tuple[list[float], list[float]]]:
    out: dict[str, tuple[list[float], list[float]]] = {}
    start = [0, 0]
    for t, pair in pairs.items():
        sides = []
        for side, values in enumerate(pair):
            sides.append([float(start[side] + r) for r in range(len(values))])
            start[side] += len(values)
        out[t] = (sides[0], sides[1])
    return out


CROSS_LAG = 8  # generations beyond which the noise's correlation is taken as gone


def cross_test_correlation(logs: Mapping[str, tuple[Sequence[float], Sequence[float]]], where: Positions,
                           sigmas: Mapping[str, float]) -> float:
    """Lag-1 correlation, in execution order, of residuals of *different* tests (0 to 0.95).

    Residuals are scaled by each test's moderated noise (its own five values'
    spread would be too noisy a yardstick). Pairs of one test are left to the
    repetition correlation; for neighbours of different tests the within-test
    centring shrinks numerator and denominator alike, so the ratio needs no
    correction.
    """
    products = squares = 0.0
    pairs = count = 0
    for side in (0, 1):
        points = []
        for t, pair in logs.items():
            values = pair[side]
            if len(values) < 2:
                continue
            mean = sum(values) / len(values)
            sd = sigmas.get(t, 0.0)
            if sd <= 0:
                continue
            points += [(p, t, (x - mean) / sd) for x, p in zip(values, where[t][side])]
        points.sort()
        squares += sum(z * z for _, _, z in points)
        count += len(points)
        for (_, ta, za), (_, tb, zb) in zip(points, points[1:]):
            if ta != tb:
                products += za * zb
                pairs += 1
    if pairs < 10 or squares <= 0:
        return 0.0
    # The mean product over cross-test neighbours over the mean square of all points.
    return max(0.0, min(0.95, (products / pairs) / (squares / count)))


def design_effect(tests: Sequence["TestShift"], where: Positions, weights: Sequence[float], phi: float) -> float:
    """Var(weighted centre) with tests correlated as AR(φ) in execution order, over the same without."""
    if phi <= 0 or len(tests) < 2:
        return 1.0
    own = cross = 0.0
    for i, a in enumerate(tests):
        pa = where[a.scope]
        own += weights[i] ** 2 * a.sigma ** 2 * sum(1 / len(pa[s]) for s in (0, 1))
        for j in range(i + 1, len(tests)):
            b = tests[j]
            pb = where[b.scope]
            cov = 0.0
            for s in (0, 1):
                near = sum(phi ** abs(x - y) for x in pa[s] for y in pb[s] if abs(x - y) <= CROSS_LAG)
                cov += near / (len(pa[s]) * len(pb[s]))
            cross += 2 * weights[i] * weights[j] * a.sigma * b.sigma * cov
    return 1.0 + cross / own if own > 0 else 1.0


def random_effects_centre(shifts: Sequence[float], variances: Sequence[float],
                          huber: float = 2.0) -> tuple[float, float, float, list[float]]:
    """The run's shift, its variance, degrees of freedom and the tests' weights in it (summing to 1).

    A random-effects meta-analysis.

    Each test is a study with its own variance; real test-specific changes are
    the between-test variance τ². Huber weights (at 2 standard deviations)
    keep a few regressed tests from moving the centre; noisy tests count for
    less than quiet ones. With five tests or more the variance is rescaled by
    the tests' observed dispersion around the centre (Hartung-Knapp-Sidik-
    Jonkman, with Huber-clipped residuals) and judged on k - 1 degrees of
    freedom: the modelled variances can be wrong either way (correlated
    repetitions, a noise floor), the spread of the tests' shifts is what the
    centre's error is made of.
    """
    k = len(shifts)
    floor = max(min(v for v in variances if v > 0), 1e-12) if any(v > 0 for v in variances) else 1e-12
    v = [max(x, floor) for x in variances]
    w = [1 / x for x in v]
    centre = sum(wi * d for wi, d in zip(w, shifts)) / sum(w)
    q = sum(wi * (d - centre) ** 2 for wi, d in zip(w, shifts))
    c = sum(w) - sum(wi * wi for wi in w) / sum(w)
    tau2 = max(0.0, (q - (k - 1)) / c) if k > 1 and c > 0 else 0.0
    if k >= HKSJ_MIN_TESTS:
        # A regressed test would inflate DerSimonian-Laird's τ² and so its own
        # weight: take the between-test spread from the median absolute deviation.
        spread = 1.4826 * median(abs(d - median(shifts)) for d in shifts)
        tau2 = max(0.0, spread * spread - median(v))
    weights = [1 / (x + tau2) for x in v]
    robust = [1.0] * k
    centre = median(shifts)
    for _ in range(20):
        total = sum(wi * ri for wi, ri in zip(weights, robust))
        new = sum(wi * ri * d for wi, ri, d in zip(weights, robust, shifts)) / total
        robust = [min(1.0, huber / (abs(d - new) * math.sqrt(wi))) if abs(d - new) * math.sqrt(wi) > huber else 1.0
                  for wi, d in zip(weights, shifts)]
        if abs(new - centre) < 1e-12:
            centre = new
            break
        centre = new
    total = sum(wi * ri for wi, ri in zip(weights, robust))
    # Huber's sandwich: Σw²ψ'… approximated by the weighted information, widened
    # by the share of down-weighted tests.
    kept = sum(robust) / k
    variance = 1 / total / max(kept, 0.5)
    share = [wi * ri / total for wi, ri in zip(weights, robust)]
    if k < HKSJ_MIN_TESTS:
        return centre, variance, MAX_PRIOR_DF, share
    clipped = sum(min(wi * (d - centre) ** 2, huber * huber) for wi, d in zip(weights, shifts))
    # E[min(z², c²)] of a standard normal z, so the scale is 1 when the model is right.
    expected = _clipped_chi2_mean(huber)
    return centre, variance * clipped / expected / (k - 1), float(k - 1), share


HKSJ_MIN_TESTS = 5


def _clipped_chi2_mean(c: float) -> float:
    normal = NormalDist()
    inside = 2 * normal.cdf(c) - 1
    return inside - 2 * c * normal.pdf(c) + c * c * (1 - inside)


# -- verdicts ----------------------------------------------------------------------------
@dataclass
class Candidate:
    """One bounded comparison before Holm's procedure."""

    scope: str
    metric: str
    bound: float
    log_estimate: float
    variance: float
    df: float
    extra: dict = field(default_factory=dict)

    def p_value(self) -> float:
        if self.variance <= 0:
            return 0.0 if self.log_estimate > math.log1p(self.bound) else 1.0
        t = (self.log_estimate - math.log1p(self.bound)) / math.sqrt(self.variance)
        return student_sf(t, max(self.df, 1.0))


def comparisons(model: RunModel, bound: float, suites: Mapping[str, tuple[float, float, float]] = {},
                run_tolerance: float = DEFAULT_RUN_TOLERANCE) -> list[Candidate]:
    """The run's shift, each suite's and each test's change beyond it.

    ``suites`` maps a name to the log change of its total, its variance and df.
    The run's shift is judged against the larger of the bound and
    ``run_tolerance``: a machine a few percent off is not a regression.
    """
    items = [Candidate("run", model.metric, max(bound, run_tolerance), model.run_shift, model.run_variance,
                       model.run_df)]
    for name, (estimate, variance, df) in suites.items():
        items.append(Candidate(f"suite {name}", model.metric, bound, estimate - model.run_shift,
                               variance + model.run_variance, df))
    for test in model.tests:
        estimate, variance = model.relative(test)
        items.append(Candidate(test.scope, model.metric, bound, estimate, variance, test.df,
                                 {"test": test}))
    return items


RUN_SHARE = 0.5


def holm(items: Sequence[Candidate], alpha: float = FAMILY_ALPHA, target: float = 0.15) -> list[Verdict]:
    """Weighted Holm step-down over every comparison; intervals at each one's own level.

    The run-level comparisons (one per metric) share half of ``alpha``, the
    suites and tests the other half: a uniform regression, which the run's
    shift sees with the power of every test together, is not diluted by the
    number of tests. Weighted Holm keeps the family-wise rate at ``alpha``.
    """
    count = len(items)
    runs = [i for i, item in enumerate(items) if item.scope == "run"]
    others = count - len(runs)
    if runs and others:
        weights = [RUN_SHARE / len(runs) if i in runs else (1 - RUN_SHARE) / others for i in range(count)]
    else:
        weights = [1 / count] * count
    order = sorted(range(count), key=lambda i: items[i].p_value() / weights[i])
    failed = [False] * count
    level = [alpha * w for w in weights]
    remaining = 1.0
    for index in order:
        threshold = alpha * weights[index] / remaining
        level[index] = threshold
        if items[index].p_value() <= threshold:
            failed[index] = True
            remaining -= weights[index]
        else:
            break
    verdicts = []
    for index, item in enumerate(items):
        sd = math.sqrt(max(item.variance, 0.0))
        q = t_quantile(1 - level[index], max(int(item.df), 1)) if sd > 0 else 0.0
        power = needed = None
        test = item.extra.get("test")
        if test is not None:
            power, needed = detection(test, item.bound, target, alpha * weights[index])
        verdicts.append(Verdict(
            scope=item.scope, metric=item.metric, bound=item.bound,
            estimate=math.expm1(item.log_estimate), low=math.expm1(item.log_estimate - q * sd),
            high=math.expm1(item.log_estimate + q * sd), p_value=item.p_value(), failed=failed[index],
            power=power, repeats_needed=needed))
    return verdicts


def detection(test: TestShift, bound: float, target: float, level: float) -> tuple[Optional[float], Optional[int]]:
    """Chance this test's regression of ``target`` beyond none is caught, and repetitions for 95%.

    Judged at ``level`` (Holm's first step: the strictest), with the test's
    own moderated noise and the same repetitions on both sides.
    """
    effect = math.log1p(target) - math.log1p(bound)
    if effect <= 0:
        return None, None  # a regression within the bound is not one to catch
    z = NormalDist().inv_cdf(1 - level)

    def power(m: int, n: int) -> float:
        sd = math.sqrt(hl_factor(m, n) * test.sigma ** 2 * (1 / m + 1 / n))
        return NormalDist().cdf(effect / sd - z) if sd > 0 else 1.0

    now = power(test.n_baseline, test.n_current)
    needed = next((r for r in range(2, 201) if power(r, r) >= 0.95), 201)
    return now, needed
