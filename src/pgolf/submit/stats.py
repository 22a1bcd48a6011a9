"""Seed statistics and the significance rule (docs/rules.md#submission-process): a new record must beat the current
one by at least 0.005 nats per token, with enough runs to show p < 0.01.

The test is a one-sided Welch t-test of H0 "the improvement is at most the margin" against H1 "it is larger":
t = (mean_against - mean_candidate - margin) / sqrt(s_a^2/n_a + s_c^2/n_c), with Welch-Satterthwaite degrees of
freedom, p = P(T_df > t). It is run on BPB with the margin converted to BPB at the candidate's val tokens per byte
(BPB = nats per token / ln 2 * tokens / bytes, a constant factor, so t and p are the same as in nats per token).
The rule "meets" when p < alpha (0.01): then the observed improvement is above the margin too. The p-value of the
plain improvement (margin 0) is reported beside it.

The t distribution's tail comes from the regularized incomplete beta function, computed here with its continued
fraction (no scipy): P(T > t) = I_{df/(df+t^2)}(df/2, 1/2) / 2 for t >= 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pgolf.errors import PgolfError
from pgolf.submit.runs import UNRECORDED, Run, val_detail, val_key

MARGIN_NATS = 0.005
ALPHA = 0.01
LN2 = math.log(2)


# ---------------------------------------------------------------------------------------------- distributions
def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), converging fast for x < (a + 1) / (a + b + 2)."""
    tiny, eps = 1e-300, 1e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for num in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta: no convergence for a={a}, b={b}, x={x}")


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc needs a, b > 0, got a={a}, b={b}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc needs 0 <= x <= 1, got {x}")
    if x == 0.0 or x == 1.0:
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with `df` > 0 degrees of freedom (non-integer allowed, as Welch's are)."""
    if not df > 0:
        raise ValueError(f"t distribution needs df > 0, got {df}")
    if math.isinf(t):
        return 0.0 if t > 0 else 1.0
    half = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return half if t >= 0 else 1.0 - half


# ---------------------------------------------------------------------------------------------- samples
def mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def sample_std(values: list[float]) -> float | None:
    """The sample standard deviation (n - 1 in the denominator); None for fewer than two values."""
    if len(values) < 2:
        return None
    m = mean(values)
    return math.sqrt(math.fsum((v - m) ** 2 for v in values) / (len(values) - 1))


@dataclass
class Sample:
    """A mean, a sample standard deviation and a count: the runs of one side, or a published summary."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> "Sample":
        return cls(mean(values), sample_std(values), len(values))


@dataclass
class WelchResult:
    t: float
    df: float | None
    p: float


def welch_greater(better: Sample, worse: Sample, margin: float = 0.0) -> WelchResult:
    """One-sided Welch test of H1 `worse.mean - better.mean > margin` (lower is better): t, df and p.

    Both sides need n >= 2 and a std. With zero spread on both sides the difference is exact: p is 0 when it
    exceeds the margin and 1 otherwise (t is then +-inf, df undefined)."""
    for side, s in (("candidate", better), ("baseline", worse)):
        if s.n < 2 or s.std is None:
            raise PgolfError(f"the t-test needs at least two runs on each side ({side} has {s.n})")
    va, vb = better.std ** 2 / better.n, worse.std ** 2 / worse.n
    diff = worse.mean - better.mean - margin
    se2 = va + vb
    if se2 == 0.0:
        t = math.inf if diff > 0 else (-math.inf if diff < 0 else 0.0)
        return WelchResult(t, None, 0.0 if diff > 0 else 1.0)
    df = se2 ** 2 / (va ** 2 / (better.n - 1) + vb ** 2 / (worse.n - 1))
    t = diff / math.sqrt(se2)
    return WelchResult(t, df, t_sf(t, df))


# ---------------------------------------------------------------------------------------------- the report
@dataclass
class Stats:
    """The rows, summaries and (with a baseline) the significance test of `pgolf stats`."""

    runs: list[Run]
    against_runs: list[Run]
    against: Sample | None
    against_label: str
    margin_nats: float
    alpha: float

    @property
    def bpb(self) -> Sample:
        return Sample.of([r.val_bpb for r in self.runs])

    @property
    def loss(self) -> Sample:
        return Sample.of([r.val_loss for r in self.runs])

    @property
    def tokens_per_byte(self) -> float:
        return mean([r.tokens_per_byte for r in self.runs])

    def nats(self, bpb_delta: float) -> float:
        """A BPB difference in nats per token, at the candidate's val tokens per byte."""
        return bpb_delta * LN2 / self.tokens_per_byte

    def comparison(self) -> dict | None:
        if self.against is None:
            return None
        cand, base = self.bpb, self.against
        improvement = base.mean - cand.mean
        margin_bpb = self.margin_nats / LN2 * self.tokens_per_byte
        out = {"against": self.against_label, "against_mean_bpb": base.mean, "against_std_bpb": base.std,
               "against_n": base.n, "improvement_bpb": improvement, "improvement_nats": self.nats(improvement),
               "margin_nats": self.margin_nats, "margin_bpb": margin_bpb, "alpha": self.alpha,
               "t": None, "df": None, "p": None, "p_improvement": None, "meets": False, "reason": ""}
        notes = []
        ratios = {round(r.tokens_per_byte, 9) for r in self.against_runs}
        if any(abs(x - self.tokens_per_byte) > 1e-6 * self.tokens_per_byte for x in ratios):
            notes.append("the baseline runs have other val tokens per byte (another tokenizer?): nats are "
                         "converted at the candidate's")
        unrecorded = sum(val_key(r) == UNRECORDED for r in [*self.runs, *self.against_runs])
        if unrecorded:
            notes.append(f"{unrecorded} run(s) do not record their val split: that both sides were scored on the "
                         "same val tokens is not checked")
        try:
            test = welch_greater(cand, base, margin_bpb)
            zero = welch_greater(cand, base, 0.0)
        except PgolfError as exc:
            out["reason"] = str(exc)
        else:
            out.update(t=test.t, df=test.df, p=test.p, p_improvement=zero.p, meets=test.p < self.alpha)
            if out["meets"]:
                out["reason"] = (f"improves by {self.nats(improvement):.5f} nats (> {self.margin_nats}) "
                                 f"at p = {test.p:.3g} < {self.alpha}")
            elif improvement <= margin_bpb:
                out["reason"] = (f"the mean improvement {self.nats(improvement):.5f} nats is not above "
                                 f"{self.margin_nats}")
            else:
                out["reason"] = f"p = {test.p:.3g} is not below {self.alpha}: more seeds, or a larger gain"
        out["notes"] = notes
        return out

    def to_dict(self) -> dict:
        loss, bpb = self.loss, self.bpb
        return {"runs": [_row(r) for r in self.runs],
                "summary": {"n": bpb.n, "val_loss_mean": loss.mean, "val_loss_std": loss.std, "val_bpb_mean": bpb.mean,
                            "val_bpb_std": bpb.std, "tokens_per_byte": self.tokens_per_byte},
                "against_runs": [_row(r) for r in self.against_runs],
                "comparison": self.comparison()}

    def markdown(self) -> str:
        lines = ["| run | seed | val_loss | val_bpb | steps | train s | total bytes |",
                 "|---|---:|---:|---:|---:|---:|---:|"]
        for row in map(_row, self.runs):
            lines.append(f"| {row['run']} | {_fmt(row['seed'])} | {row['val_loss']:.8f} | {row['val_bpb']:.8f} | "
                         f"{_fmt(row['steps'])} | {_fmt(row['train_seconds'])} | {_fmt(row['total_bytes'], ',')} |")
        loss, bpb = self.loss, self.bpb
        lines.append(f"| **mean** (n={bpb.n}) | | {loss.mean:.8f} | {bpb.mean:.8f} | | | |")
        lines.append(f"| **std** (sample) | | {_fmt(loss.std, '.8f')} | {_fmt(bpb.std, '.8f')} | | | |")
        lines += ["", val_detail(self.runs[0])]
        comp = self.comparison()
        if comp is not None:
            lines += ["", f"Against {comp['against']}: mean val_bpb {comp['against_mean_bpb']:.8f}, std "
                          f"{_fmt(comp['against_std_bpb'], '.8f')}, n={comp['against_n']}", "",
                      "| | value |", "|---|---:|",
                      f"| improvement (BPB) | {comp['improvement_bpb']:+.6f} |",
                      f"| improvement (nats/token) | {comp['improvement_nats']:+.6f} |",
                      f"| margin | {comp['margin_nats']} nats = {comp['margin_bpb']:.6f} BPB |",
                      f"| Welch t (vs margin) | {_fmt(comp['t'], '.4f')} |",
                      f"| df | {_fmt(comp['df'], '.2f')} |",
                      f"| p (improvement > margin) | {_fmt(comp['p'], '.3g')} |",
                      f"| p (improvement > 0) | {_fmt(comp['p_improvement'], '.3g')} |",
                      f"| meets the rule (>= {comp['margin_nats']} nats at p < {comp['alpha']}) | "
                      f"**{'yes' if comp['meets'] else 'no'}** |", "", comp["reason"]]
            lines += comp["notes"]
        return "\n".join(lines)


def _fmt(value, spec: str = "") -> str:
    return "n/a" if value is None else format(value, spec)


def _row(run: Run) -> dict:
    return {"run": run.label, "seed": run.seed, "val_loss": run.val_loss, "val_bpb": run.val_bpb,
            "steps": run.get("steps"), "train_seconds": run.get("train_seconds"),
            "total_bytes": run.get("total_bytes"), "tokens_per_byte": run.tokens_per_byte}


def compute_stats(runs: list[Run], against_runs: list[Run] | None = None, sota: Sample | None = None, *,
                  margin_nats: float = MARGIN_NATS, alpha: float = ALPHA) -> Stats:
    """The statistics of `runs`, tested against `against_runs` or a published `sota` summary (BPB) if given."""
    if against_runs and sota is not None:
        raise PgolfError("give either baseline runs (--against) or a published score (--sota-*), not both")
    everyone = [*runs, *(against_runs or [])]
    splits = sorted({val_key(r) for r in everyone} - {UNRECORDED})
    if len(splits) > 1:
        raise PgolfError(f"stats: the runs were scored on {len(splits)} different val splits (digests "
                         f"{', '.join(splits)}): scores on different val tokens are not comparable")
    against, label = None, ""
    if against_runs:
        against, label = Sample.of([r.val_bpb for r in against_runs]), f"{len(against_runs)} baseline run(s)"
    elif sota is not None:
        against, label = sota, "the published score"
    return Stats(runs, list(against_runs or []), against, label, margin_nats, alpha)
