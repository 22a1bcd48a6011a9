"""`pgolf stats`: the incomplete beta and t tails against closed forms and tables, the Welch test against a
hand-worked example, and the command on fake run directories (never dropping a seed)."""

from __future__ import annotations

import json
import math

import pytest
from _submit_fakes import VAL_BYTES, VAL_TOKENS, fake_run

from pgolf.cli import main
from pgolf.errors import PgolfError
from pgolf.submit.runs import load_run
from pgolf.submit.stats import Sample, betainc, compute_stats, sample_std, t_sf, welch_greater


@pytest.mark.parametrize("a,b,x", [(0.5, 0.5, 0.3), (2.0, 3.0, 0.9), (7.5, 0.5, 0.6), (1.0, 4.0, 0.05)])
def test_betainc_closed_forms(a, b, x):
    assert betainc(a, 1.0, x) == pytest.approx(x ** a, rel=1e-12)
    assert betainc(1.0, b, x) == pytest.approx(1 - (1 - x) ** b, rel=1e-12)
    assert betainc(a, a, 0.5) == pytest.approx(0.5, abs=1e-13)
    assert betainc(a, b, x) == pytest.approx(1 - betainc(b, a, 1 - x), abs=1e-13)
    # I_x(1/2, 1/2) = 2/pi asin(sqrt(x))
    assert betainc(0.5, 0.5, x) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)), rel=1e-12)


def test_t_tail_closed_forms_and_table():
    for t in (-3.0, -0.4, 0.0, 0.7, 2.5, 40.0):
        assert t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, rel=1e-11)  # Cauchy
        assert t_sf(t, 2) == pytest.approx(0.5 - t / (2 * math.sqrt(t * t + 2)), rel=1e-11)
    # one-sided critical values from the t table
    assert t_sf(2.015048, 5) == pytest.approx(0.05, rel=1e-5)
    assert t_sf(2.763769, 10) == pytest.approx(0.01, rel=1e-5)
    assert t_sf(2.749996, 30) == pytest.approx(0.005, rel=1e-5)
    assert t_sf(math.inf, 3) == 0.0 and t_sf(-math.inf, 3) == 1.0


def _t_tail_by_integration(t: float, df: float, n: int = 20_000) -> float:
    """P(T > t) by Simpson's rule on the density over [0, t]: an independent check of t_sf."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)  # noqa: E731
    h = t / n
    s = f(0) + f(t) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, n))
    return 0.5 - s * h / 3


def test_welch_by_hand():
    # candidate 1.100, 1.102, 1.104: mean 1.102, s^2 = (4e-6 + 0 + 4e-6) / 2 = 4e-6
    # baseline  1.110, 1.114, 1.118: mean 1.114, s^2 = 16e-6
    # se^2 = 4e-6/3 + 16e-6/3 = 20e-6/3; t = 0.012 / sqrt(20e-6/3) = 4.64758
    # df = se^4 / ((4e-6/3)^2/2 + (16e-6/3)^2/2) = (400/9) / ((16 + 256)/18) = 800/272 = 2.94118
    cand, base = Sample.of([1.100, 1.102, 1.104]), Sample.of([1.110, 1.114, 1.118])
    assert cand.std == pytest.approx(0.002) and base.std == pytest.approx(0.004)
    r = welch_greater(cand, base)
    assert r.t == pytest.approx(0.012 / math.sqrt(20e-6 / 3), rel=1e-9)
    assert r.t == pytest.approx(4.64758, rel=1e-5)
    assert r.df == pytest.approx(800 / 272, rel=1e-9)
    assert r.p == pytest.approx(_t_tail_by_integration(r.t, r.df), abs=1e-9)
    assert 0.009 < r.p < 0.011
    # against a margin of 0.004: t = 0.008 / se
    m = welch_greater(cand, base, 0.004)
    assert m.t == pytest.approx(0.008 / math.sqrt(20e-6 / 3), rel=1e-9)
    assert m.p == pytest.approx(_t_tail_by_integration(m.t, m.df), abs=1e-9)
    assert m.p > r.p


def test_welch_needs_two_runs_and_handles_zero_spread():
    with pytest.raises(PgolfError, match="at least two runs"):
        welch_greater(Sample.of([1.0]), Sample.of([1.1, 1.2]))
    assert welch_greater(Sample.of([1.0, 1.0]), Sample.of([1.1, 1.1]), 0.05).p == 0.0
    assert welch_greater(Sample.of([1.0, 1.0]), Sample.of([1.1, 1.1]), 0.2).p == 1.0
    assert sample_std([1.0]) is None


def test_stats_rows_means_and_rule(tmp_path):
    cand = [load_run(fake_run(tmp_path / "c", s, b)) for s, b in ((1, 1.1000), (2, 1.1010), (3, 1.0990))]
    base = [load_run(fake_run(tmp_path / "b", s, b)) for s, b in ((1, 1.1100), (2, 1.1110), (3, 1.1090))]
    stats = compute_stats(cand, base)
    d = stats.to_dict()
    assert [r["seed"] for r in d["runs"]] == [1, 2, 3]
    assert d["summary"]["val_bpb_mean"] == pytest.approx(1.1)
    assert d["summary"]["val_bpb_std"] == pytest.approx(0.001)
    comp = d["comparison"]
    tpb = VAL_TOKENS / VAL_BYTES
    assert comp["improvement_bpb"] == pytest.approx(0.01)
    assert comp["improvement_nats"] == pytest.approx(0.01 * math.log(2) / tpb)  # 0.01733 nats
    assert comp["margin_bpb"] == pytest.approx(0.005 / math.log(2) * tpb)
    se = math.sqrt(2 * 0.001 ** 2 / 3)
    assert comp["t"] == pytest.approx((0.01 - comp["margin_bpb"]) / se)
    assert comp["df"] == pytest.approx(4.0)
    assert comp["p"] == pytest.approx(_t_tail_by_integration(comp["t"], 4.0), abs=1e-9)
    assert comp["meets"] is True
    # the same gain with a large spread does not reach p < 0.01
    noisy = [load_run(fake_run(tmp_path / "n", s, b)) for s, b in ((1, 1.09), (2, 1.11), (3, 1.10))]
    comp = compute_stats(noisy, base).comparison()
    assert comp["meets"] is False and comp["p"] > 0.01 and "not below" in comp["reason"]
    # a gain below the margin never meets, however certain
    close = [load_run(fake_run(tmp_path / "m", s, b)) for s, b in ((1, 1.1090), (2, 1.1091), (3, 1.1089))]
    comp = compute_stats(close, base).comparison()
    assert comp["meets"] is False and "not above" in comp["reason"]


def test_stats_command(tmp_path, capsys):
    runs = [str(fake_run(tmp_path, s, b)) for s, b in ((1, 1.1000), (2, 1.1010), (3, 1.0990))]
    assert main(["stats", *runs, "--sota-bpb", "1.11", "--sota-std", "0.001", "--sota-n", "3"]) == 0
    out = capsys.readouterr().out
    assert "| **mean** (n=3) |" in out and "**yes**" in out and "1.10000000" in out
    assert main(["stats", *runs, "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["comparison"] is None and d["summary"]["n"] == 3
    # a published score with n=1 cannot be tested: reported, not a crash
    assert main(["stats", *runs, "--sota-bpb", "1.2", "--sota-std", "0", "--sota-n", "1", "--json"]) == 0
    comp = json.loads(capsys.readouterr().out)["comparison"]
    assert comp["meets"] is False and comp["p"] is None and "at least two runs" in comp["reason"]


def test_stats_never_drops_a_seed(tmp_path, capsys):
    runs = [str(fake_run(tmp_path, s, 1.1)) for s in (1, 2)]
    unfinished = tmp_path / "seed3"
    unfinished.mkdir()
    (unfinished / "log.txt").write_text("step:1/100 train_loss:6.9 train_time:10ms step_avg:10.00ms\n")
    assert main(["stats", *runs, str(unfinished)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(unfinished) in err and "no final score" in err
    assert main(["stats", *runs, "--sota-bpb", "1.1"]) == 2
    assert "--sota-std" in capsys.readouterr().err
    assert main(["stats", *runs, "--against", runs[0], "--sota-bpb", "1", "--sota-std", "0", "--sota-n", "2"]) == 2
    assert "not both" in capsys.readouterr().err


def test_stats_reads_a_records_folder_as_its_logs(tmp_path, capsys):
    folder = tmp_path / "records"
    folder.mkdir()
    for seed, bpb in ((1, 1.1000), (2, 1.1020)):
        run = fake_run(tmp_path / "runs", seed, bpb)
        (folder / f"train_seed{seed}.log").write_bytes((run / "log.txt").read_bytes())
    (folder / "README.md").write_text("x")
    assert main(["stats", str(tmp_path / "runs" / "seed1"), "--against", str(folder), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert [r["run"] for r in d["against_runs"]] == [str(folder / "train_seed1.log"), str(folder / "train_seed2.log")]
    assert [r["steps"] for r in d["against_runs"]] == [4000, 4000]
    assert d["comparison"]["against_mean_bpb"] == pytest.approx(1.101)
    # the ratio from a bare log (val_bpb / val_loss, 8 decimals) is the one result.json records
    assert d["against_runs"][0]["tokens_per_byte"] == pytest.approx(VAL_TOKENS / VAL_BYTES, rel=1e-7)
    assert d["comparison"]["notes"] == []


def test_stats_flags_baselines_on_another_tokenizer(tmp_path):
    cand = [load_run(fake_run(tmp_path / "c", s, 1.10 + s / 1000)) for s in (1, 2)]
    base_dirs = [fake_run(tmp_path / "b", s, 1.12 + s / 1000) for s in (1, 2)]
    for run in base_dirs:  # same BPB, but a tokenizer with fewer tokens per byte
        result = json.loads((run / "result.json").read_text())
        result["val_tokens"] = VAL_TOKENS // 2
        (run / "result.json").write_text(json.dumps(result))
    comp = compute_stats(cand, [load_run(r) for r in base_dirs]).comparison()
    assert comp["notes"] and "another tokenizer" in comp["notes"][0]
    assert comp["improvement_bpb"] == pytest.approx(0.02)


def test_code_size_lines_of_both_formats_are_read():
    """The official script's `Code size: N bytes` (what pgolf logs now, with how it counted after it) and pgolf's
    older `Code size (method): N bytes`."""
    from pgolf.submit.runs import parse_log

    assert parse_log("Code size: 47642 bytes\n").code_bytes == 47642
    assert parse_log("Code size: 67756 bytes (size of the bundle)\n").code_bytes == 67756
    assert parse_log("Code size (size of the bundle): 64640 bytes\n").code_bytes == 64640
