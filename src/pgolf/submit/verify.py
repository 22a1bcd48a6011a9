"""`pgolf verify FOLDER`: check a records folder (as `pgolf pack` writes it) against its own files.

Every claim of submission.json is recomputed from the files beside it: the code bytes from train_gpt.py's size,
each artifact's bytes and sha256 from the file, the totals against the 16,000,000-byte cap, each seed's score,
steps and byte counts against its train log, the train and eval times the logs record against the 600 s limits,
the means and standard deviation from the per-seed rows, the compliance flags, what the logs say about data use
(GPTQ calibration must not read validation data, nor training data past the clock), and `pgolf legality`'s verdict
when the folder has one. With `--data DIR` each artifact is also re-scored in a fresh process
(`python -m pgolf eval`) and compared with the claimed score. The folder's own train_gpt.py is never executed
unless `--run` asks for it (it then retrains each seed from the bundle and compares the scores).

`pgolf verify` exits 0 when every check passed (or had nothing to check), 1 when the folder was read but a check
failed (each failure also one `pgolf: verify: FAIL` line), and 2, with one `pgolf: error:` line, for bad input: a
bad command line, no such folder, or a submission.json that is missing or cannot be read as a submission.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pgolf.data.val_split import describe as describe_split, short_digest
from pgolf.errors import PgolfError
from pgolf.submit.pack import (BUNDLE, CAP_BYTES, EVAL_LIMIT_S, RECORD_TRACK, SUBMISSION, TRAIN_LIMIT_S, reads_val,
                               sha256_file)
from pgolf.submit.runs import parse_log
from pgolf.submit.stats import mean, sample_std

SCORE_TOL = 1e-8  # the logs print scores with 8 decimals
TIME_TOL_S = 0.01  # the logs print times in whole milliseconds


@dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped (nothing to check)
    detail: str

    @property
    def status(self) -> str:
        return "skip" if self.ok is None else ("pass" if self.ok else "FAIL")


@dataclass
class Report:
    folder: Path
    checks: list[Check]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    @property
    def passed(self) -> bool:
        return not self.failures

    def table(self) -> str:
        width = max(len(c.name) for c in self.checks)
        lines = [f"| {'check':<{width}} | result | detail |", f"|{'-' * (width + 2)}|--------|--------|"]
        lines += [f"| {c.name:<{width}} | {c.status:<6} | {c.detail} |" for c in self.checks]
        lines.append(f"\n{self.folder}: " + ("verified" if self.passed else f"{len(self.failures)} check(s) failed"))
        return "\n".join(lines)


def _close(a, b, tol: float) -> bool:
    return a is not None and b is not None and math.isfinite(a) and math.isfinite(b) and abs(a - b) <= tol


class _Checks:
    def __init__(self) -> None:
        self.items: list[Check] = []

    def add(self, name: str, problems: list[str], ok_detail: str) -> None:
        self.items.append(Check(name, not problems, "; ".join(problems) if problems else ok_detail))

    def skip(self, name: str, detail: str) -> None:
        self.items.append(Check(name, None, detail))


def verify_folder(folder: str | Path, *, data: str | Path | None = None, tolerance: float = 1e-5,
                  run: bool = False, run_tolerance: float = 0.005, eval_args: list[str] | None = None,
                  python: str = sys.executable) -> Report:
    """Check the records folder `folder`; see the module docstring. PgolfError when there is nothing to verify (no
    such folder, a submission.json that is missing or cannot be read as a submission); after that every problem is a
    failed check of the report."""
    folder = Path(folder)
    checks = _Checks()
    if not folder.is_dir():
        raise PgolfError(f"{folder}: no such folder")
    if run and data is None:
        raise PgolfError("verify: --run needs --data DIR")
    sub_path = folder / SUBMISSION
    try:
        sub = json.loads(sub_path.read_text(encoding="utf-8"))
        seeds = sub["seed_results"]
        if not isinstance(sub, dict) or not isinstance(seeds, list) or not seeds:
            raise ValueError("no seed_results")
        if not all(isinstance(s, dict) for s in seeds):
            raise ValueError("a seed_results entry is not an object")
        for s in seeds:
            for key in ("log", "artifact"):
                if s.get(key) is not None and (not isinstance(s[key], str) or Path(s[key]).name != s[key]):
                    raise ValueError(f"seed {s.get('seed')}: {key} {s[key]!r} is not a file name in the folder")
        for key in ("val_loss", "val_bpb", "bytes_total", "bytes_code"):
            if not isinstance(sub.get(key), (int, float)):
                raise ValueError(f"no numeric {key}")
    except FileNotFoundError:
        raise PgolfError(f"{sub_path} is missing: {folder} is not a records folder (pgolf pack writes one)") from None
    except OSError as exc:
        raise PgolfError(f"{sub_path}: cannot read it ({exc.strerror or exc})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise PgolfError(f"{sub_path} is not a valid submission ({exc})") from None
    checks.add("submission.json", [], f"{len(seeds)} seed(s)")

    missing = [n for n in ("README.md", BUNDLE, "requirements.txt") if not (folder / n).is_file()]
    missing += [s.get("log", f"log of seed {s.get('seed')}") for s in seeds
                if not (s.get("log") and (folder / s["log"]).is_file())]
    checks.add("files", [f"missing {', '.join(missing)}"] if missing else [], "README.md, train_gpt.py, "
               "requirements.txt and a log per seed")

    bundle = folder / BUNDLE
    code = bundle.stat().st_size if bundle.is_file() else None
    problems = []
    if code is None:
        problems.append(f"no {BUNDLE} to count")
    elif code != sub["bytes_code"]:
        problems.append(f"{BUNDLE} is {code:,} bytes, submission.json says bytes_code {sub['bytes_code']:,}")
    checks.add("code bytes", problems, f"{BUNDLE}: {code:,} bytes" if code is not None else "")

    totals = []
    for s in seeds:
        seed = s.get("seed")
        art = folder / s["artifact"] if s.get("artifact") else None
        if art is None:
            checks.skip(f"artifact seed {seed}", "no artifact in the folder")
            continue
        if not art.is_file():
            checks.add(f"artifact seed {seed}", [f"{s['artifact']} is missing"], "")
            continue
        size = art.stat().st_size
        problems = []
        if size != s.get("artifact_bytes"):
            problems.append(f"{s['artifact']} is {size:,} bytes, submission.json says {s.get('artifact_bytes')}")
        if s.get("artifact_sha256") and sha256_file(art) != s["artifact_sha256"]:
            problems.append(f"{s['artifact']}'s sha256 differs from submission.json's")
        checks.add(f"artifact seed {seed}", problems, f"{size:,} bytes, sha256 as claimed")
        if code is not None:
            total = size + code
            totals.append(total)
            problems = []
            if total != s.get("bytes_total"):
                problems.append(f"{size:,} + {code:,} = {total:,} bytes, submission.json says {s.get('bytes_total')}")
            if total > CAP_BYTES:
                problems.append(f"{total:,} bytes is over the {CAP_BYTES:,}-byte cap")
            checks.add(f"bytes seed {seed}", problems, f"{size:,} + {code:,} = {total:,} <= {CAP_BYTES:,}")

    problems = []
    claimed_total = sub["bytes_total"]
    if totals and max(totals) != claimed_total:
        problems.append(f"the largest total is {max(totals):,} bytes, submission.json says bytes_total "
                        f"{claimed_total:,}")
    worst = max(totals) if totals else claimed_total
    if worst > CAP_BYTES:
        problems.append(f"{worst:,} bytes is over the {CAP_BYTES:,}-byte cap")
    checks.add("cap", problems, f"{worst:,} <= {CAP_BYTES:,} bytes")

    for s in seeds:
        _check_log(checks, folder, s)

    problems = []
    bpbs, losses = [s.get("val_bpb") for s in seeds], [s.get("val_loss") for s in seeds]
    if all(isinstance(v, (int, float)) for v in bpbs + losses):
        for key, values in (("val_bpb", bpbs), ("val_loss", losses)):
            if not _close(mean(values), sub[key], 1e-9):
                problems.append(f"the mean of the seeds' {key} is {mean(values):.8f}, submission.json says "
                                f"{sub[key]:.8f}")
            std, claimed = sample_std(values), sub.get(f"{key}_std")
            if (std is None) != (claimed is None) or (std is not None and not _close(std, claimed, 1e-9)):
                problems.append(f"the sample std of {key} is {std}, submission.json says {claimed}")
    else:
        problems.append("a seed has no numeric val_bpb/val_loss")
    if sub.get("seeds") is not None and sub["seeds"] != [s.get("seed") for s in seeds]:
        problems.append(f"seeds {sub['seeds']} differ from the seed_results' {[s.get('seed') for s in seeds]}")
    checks.add("means", problems, f"val_bpb {sub['val_bpb']:.8f} = mean of {len(seeds)}")

    _check_compliance(checks, sub, seeds, worst)
    _check_val_split(checks, sub, seeds)
    _check_legality(checks, folder, sub)
    if data is not None:
        _check_data_overlap(checks, Path(data))
        for s in seeds:
            _rescore(checks, folder, s, Path(data), tolerance, eval_args or [], python)
    if run:
        for s in seeds:
            _rerun(checks, folder, s, sub.get("overrides") or [], Path(data), run_tolerance, python)
    return Report(folder, checks.items)


def _check_log(checks: _Checks, folder: Path, s: dict) -> None:
    seed = s.get("seed")
    log = folder / s["log"] if s.get("log") else None
    if log is None or not log.is_file():
        checks.add(f"log seed {seed}", ["no train log"], "")
        return
    facts = parse_log(log.read_text(encoding="utf-8", errors="replace"))
    problems = []
    if facts.val_bpb is None:
        problems.append(f"{log.name} has no final `_exact val_loss:... val_bpb:...` line")
    else:
        for key, value in (("val_loss", facts.val_loss), ("val_bpb", facts.val_bpb)):
            if not _close(value, s.get(key), SCORE_TOL):
                problems.append(f"{log.name} says {key} {value:.8f}, submission.json says {s.get(key)}")
    if facts.seed is not None and facts.seed != seed:
        problems.append(f"{log.name} is a run of seed {facts.seed}")
    if facts.steps is not None and s.get("steps") is not None and facts.steps != s["steps"]:
        problems.append(f"{log.name} stopped at step {facts.steps}, submission.json says {s['steps']}")
    if facts.artifact_bytes is not None and s.get("artifact_bytes") is not None \
            and facts.artifact_bytes != s["artifact_bytes"]:
        problems.append(f"{log.name} serialized {facts.artifact_bytes:,} bytes, submission.json says "
                        f"{s['artifact_bytes']:,}")
    checks.add(f"log seed {seed}", problems, "score, steps and bytes as claimed")

    _check_time(checks, f"train time seed {seed}", log.name, facts.train_ms, s.get("train_seconds"), TRAIN_LIMIT_S,
                "train_time", "training")
    if facts.train_ms is not None and facts.train_calibration_s is not None:
        total = facts.train_ms / 1000 + facts.train_calibration_s
        problems = [f"{log.name}: training {facts.train_ms / 1000:.1f} s + GPTQ calibration on training data "
                    f"{facts.train_calibration_s:.1f} s = {total:.1f} s > {TRAIN_LIMIT_S:.0f} s"] \
            if total > TRAIN_LIMIT_S else []
        checks.add(f"train+calibration seed {seed}", problems, f"{total:.1f} s <= {TRAIN_LIMIT_S:.0f} s (the "
                   "calibration reads training data, so the rules count it as training)")
    _check_time(checks, f"eval time seed {seed}", log.name, facts.eval_ms, s.get("eval_seconds"), EVAL_LIMIT_S,
                "eval_time", "evaluation")

    problems = [f"{log.name}: calibration read validation data: {line}" for line in facts.calibration
                if reads_val(line)]
    problems += [f"{log.name}: {line}" for line in facts.warnings if "calibration" in line]
    detail = ("GPTQ calibration: " + facts.calibration[-1].split(": ", 1)[-1]) if facts.calibration else \
        "no calibration on data recorded"
    if facts.periodic_validations:
        detail += (f"; val scored {facts.periodic_validations} time(s) during training (monitoring, clock paused, "
                   "not trained on)")
    checks.add(f"data use seed {seed}", problems, detail)


def _check_compliance(checks: _Checks, sub: dict, seeds: list[dict], worst: int) -> None:
    c = sub.get("compliance")
    if not isinstance(c, dict):
        checks.skip("compliance", "submission.json has no compliance fields")
        return
    train = [s.get("train_seconds") for s in seeds]
    evals = [s.get("eval_seconds") for s in seeds]
    expect = {"within_cap": worst <= CAP_BYTES,
              "train_within_limit": all(t is not None and t <= TRAIN_LIMIT_S for t in train),
              "eval_within_limit": all(t is not None and t <= EVAL_LIMIT_S for t in evals)}
    problems = [f"compliance.{k} is {c[k]}, the files say {v}" for k, v in expect.items() if k in c and c[k] != v]
    problems += [f"compliance.{k} is false" for k in ("within_cap", "train_within_limit", "eval_within_limit",
                                                       "val_not_trained_on") if c.get(k) is False]
    checks.add("compliance", problems, "flags agree with the files")


def claims_record(sub: dict) -> bool:
    """A folder claims a record unless packed with --non-record (older folders: unless on the non-record track)."""
    record = sub.get("record")
    return record if isinstance(record, bool) else sub.get("track", RECORD_TRACK) == RECORD_TRACK


def _check_val_split(checks: _Checks, sub: dict, seeds: list[dict]) -> None:
    """Every seed scored on the same val tokens; a record claim on the full official val split (docs/integrity.md)."""
    splits = [s.get("val_split") for s in seeds]
    record = claims_record(sub)
    if not all(isinstance(v, dict) and isinstance(v.get("digest"), str) for v in splits):
        missing = [str(s.get("seed")) for s, v in zip(seeds, splits) if not isinstance(v, dict)]
        problem = f"seed(s) {', '.join(missing)} do not record the val split they were scored on"
        if record:
            checks.add("val split", [problem + ": a record must show it was scored on the official split"], "")
        else:
            checks.skip("val split", problem + " (non-record)")
        return
    problems = []
    if len({v["digest"] for v in splits}) > 1:
        problems.append("the seeds were scored on different val splits (digests "
                        f"{', '.join(sorted({short_digest(v['digest']) for v in splits}))})")
    verdicts = [v.get("verdict") or {} for v in splits]
    if record and not all(v.get("official") for v in verdicts):
        reason = next(v.get("reason", "no verdict") for v in verdicts if not v.get("official"))
        problems.append(f"claims a record but {reason} (pack it with --non-record, or score on the official split)")
    detail = describe_split(splits[0]) + ("" if record else " (non-record)")
    checks.add("val split", problems, detail)


def _check_data_overlap(checks: _Checks, data: Path) -> None:
    """The data directory the artifacts are re-scored on holds no train document equal to a val document
    (pgolf/data/overlap.py; the #2127 leak)."""
    from pgolf.data.overlap import check_overlap

    try:
        found = check_overlap(data)
    except PgolfError as exc:
        checks.add("data overlap", [str(exc)], "")
        return
    problem = found.problem(data)
    checks.add("data overlap", [problem] if problem else [], found.summary(data))


def _check_legality(checks: _Checks, folder: Path, sub: dict) -> None:
    path = folder / "legality.txt"
    claimed = (sub.get("compliance") or {}).get("legality")
    if not path.is_file():
        if claimed:
            checks.add("legality", [f"submission.json claims {claimed!r} but the folder has no legality.txt"], "")
        else:
            checks.skip("legality", "no legality.txt (pgolf legality) in the folder")
        return
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    verdict = lines[-1] if lines else ""
    problems = []
    if verdict != "legal":
        problems.append(f"legality.txt: {verdict or 'empty'}")
    if claimed and claimed != verdict:
        problems.append(f"submission.json says {claimed!r}, legality.txt says {verdict!r}")
    checks.add("legality", problems, "C1-C4 pass (legality.txt)")


def _check_time(checks: _Checks, name: str, log_name: str, ms: float | None, claimed: float | None, limit: float,
                key: str, what: str) -> None:
    """One phase's time from the log: present, within `limit` seconds, and equal to submission.json's claim."""
    problems = []
    if ms is None:
        problems.append(f"{log_name} records no {key}")
    else:
        seconds = ms / 1000
        if seconds > limit:
            problems.append(f"{log_name}: {what} took {seconds:.1f} s > {limit:.0f} s")
        if claimed is not None and not _close(seconds, claimed, TIME_TOL_S):
            problems.append(f"{log_name} says {seconds:.3f} s of {what}, submission.json says {claimed}")
    checks.add(name, problems, f"{ms / 1000:.1f} s <= {limit:.0f} s" if ms is not None else "")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def _rescore(checks: _Checks, folder: Path, s: dict, data: Path, tolerance: float, eval_args: list[str],
             python: str) -> None:
    seed, name = s.get("seed"), f"rescore seed {s.get('seed')}"
    art = folder / s["artifact"] if s.get("artifact") else None
    if art is None or not art.is_file():
        checks.skip(name, "no artifact to re-score")
        return
    # -P: the working directory is not put on sys.path, so a `pgolf/` folder where verify runs (a submission's own
    # code, say) cannot stand in for the installed package.
    claimed_split = s.get("val_split") or {}
    # A score on the first N val tokens (a CPU run's bounded final score, eval.max_tokens) is re-scored on those N.
    subset = (["--max-tokens", str(claimed_split["tokens"])]
              if claimed_split.get("full") is False and claimed_split.get("tokens") else [])
    cmd = [python, "-P", "-m", "pgolf", "eval", str(art.resolve()), "--data", str(Path(data).resolve()), "--json",
           *subset, *eval_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env())
    if proc.returncode != 0:
        checks.add(name, [f"`pgolf eval` failed (exit {proc.returncode}): {_last_line(proc.stderr)}"], "")
        return
    try:
        got = json.loads(proc.stdout)
        bpb = float(got["val_bpb"])
    except (ValueError, KeyError, TypeError):
        checks.add(name, [f"`pgolf eval` printed no score: {_last_line(proc.stdout)}"], "")
        return
    problems = []
    if not _close(bpb, s.get("val_bpb"), tolerance):
        problems.append(f"re-scored val_bpb {bpb:.8f}, submission.json says {s.get('val_bpb')} "
                        f"(differs by {abs(bpb - s.get('val_bpb', math.nan)):.2e} > {tolerance:g})")
    if got.get("full_val") is False and not subset:
        problems.append("the re-score did not cover the whole val split")
    got_split = got.get("val_split") or {}
    if claimed_split.get("digest") and got_split.get("digest") != claimed_split["digest"]:
        problems.append(f"{data} holds other val tokens (digest {short_digest(got_split.get('digest'))}) than the "
                        f"seed was scored on ({short_digest(claimed_split['digest'])})")
    checks.add(name, problems, f"val_bpb {bpb:.8f} (within {tolerance:g}) in a fresh process")


def _rerun(checks: _Checks, folder: Path, s: dict, overrides: list[str], data: Path, tolerance: float,
           python: str) -> None:
    seed, name = s.get("seed"), f"rerun seed {s.get('seed')}"
    with tempfile.TemporaryDirectory(prefix="pgolf-verify-") as tmp:
        run_dir = Path(tmp) / f"seed{seed}"
        cmd = [python, str((folder / BUNDLE).resolve()), "--data", str(Path(data).resolve()), "--seed", str(seed),
               "--run-dir", str(run_dir)]
        for o in overrides:
            cmd += ["--set", o]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=folder, env=_clean_env())
        result = run_dir / "result.json"
        if proc.returncode != 0 or not result.is_file():
            checks.add(name, [f"train_gpt.py failed (exit {proc.returncode}): {_last_line(proc.stderr)}"], "")
            return
        bpb = float(json.loads(result.read_text(encoding="utf-8"))["val_bpb"])
    problems = []
    if not _close(bpb, s.get("val_bpb"), tolerance):
        problems.append(f"retrained val_bpb {bpb:.8f}, submission.json says {s.get('val_bpb')} "
                        f"(differs by more than {tolerance:g})")
    checks.add(name, problems, f"train_gpt.py retrained to val_bpb {bpb:.8f} (within {tolerance:g})")


def _clean_env() -> dict:
    """The environment of the child processes, without pgolf's config variables (they would change its run)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PGOLF_") or k == "PGOLF_SHARED_DATA"}
