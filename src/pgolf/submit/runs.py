"""Reading finished runs for the submission commands: a run directory (result.json, config.json, log.txt) or a
single train log (the `train_seedS.log` of a records folder, or an official-style log of another codebase).

Every figure comes from the run's own files: the final score from result.json, else from the log's
`final_..._roundtrip_exact val_loss:X val_bpb:Y` line; a run with neither has no final score and is an error that
names it (a seed is never silently dropped). The val split's scored tokens and bytes, which turn a difference in
BPB into nats per token, come from result.json (`val_tokens`, `val_bytes`); without them the ratio follows from
the score itself, since val_bpb = val_loss / ln 2 * tokens / bytes.

Scores are comparable only on the same val split: `val_key` is the short digest of the split a run was scored on
(result.json's `val_split`, or the log's `val split:` line; `pgolf.data.val_split`), UNRECORDED for runs and
foreign logs that do not say; `compare`, `leaderboard` and `stats` keep runs of different splits apart.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from pgolf.data.val_split import describe, short_digest
from pgolf.errors import PgolfError

EXACT_LINE = re.compile(r"^(final_\S+)_exact val_loss:(\S+) val_bpb:(\S+)", re.M)
ROUNDTRIP_LINE = re.compile(r"^final_\S+_roundtrip val_loss:\S+ val_bpb:\S+ eval_time:(\d+(?:\.\d+)?)ms", re.M)
TRAIN_TIME = re.compile(r"train_time: ?(\d+(?:\.\d+)?)ms")
STEP_LINE = re.compile(r"^step:(\d+)/\d+ ", re.M)
STOPPING_EARLY = re.compile(r"^stopping_early: \S+ train_time: ?(\d+(?:\.\d+)?)ms step: ?(\d+)/", re.M)
SEED = re.compile(r"\bseed:(\d+)\b")
SERIALIZED = re.compile(r"^Serialized model \S+: (\d+) bytes", re.M)
CODE_SIZE = re.compile(r"^Code size(?: \(.*\))?: (\d+) bytes", re.M)  # the official line, and pgolf's older one
CALIBRATION = re.compile(r"^gptq_calibration: .*$", re.M)
PERIODIC_VAL = re.compile(r"^step:\d+/\d+ val_loss:", re.M)
VAL_SPLIT_LINE = re.compile(r"^val split: .* digest ([0-9a-f]{12}); (official|NOT official)", re.M)
# GPTQ calibration on training data, which the rules charge to the 600 s of training: pgolf's line, and the
# records' scripts' (`GPTQ:collected 67 Hessians in 6.9s`, read from training batches after the clock in PR #2135)
TRAIN_CALIBRATION = re.compile(r"^(?:gptq_calibration: .* train tokens in|GPTQ:collected \d+ Hessians in) "
                               r"(\d+(?:\.\d+)?)s", re.M)
UNRECORDED = "unrecorded"  # the val split of a run that does not say which it was scored on


@dataclass
class LogFacts:
    """What a train log says about its run; None where the log does not say."""

    val_loss: float | None = None
    val_bpb: float | None = None
    steps: int | None = None
    train_ms: float | None = None
    eval_ms: float | None = None
    seed: int | None = None
    artifact_bytes: int | None = None
    code_bytes: int | None = None
    calibration: list[str] = field(default_factory=list)
    periodic_validations: int = 0  # `step:S/N val_loss:...` lines: val scored during training (clock paused)
    warnings: list[str] = field(default_factory=list)
    val_split: dict | None = None  # from the `val split:` line: the digest's first 12 digits and the verdict
    train_calibration_s: float | None = None  # GPTQ calibration on training data (TRAIN_CALIBRATION), seconds


def parse_log(text: str) -> LogFacts:
    """The facts of one train log (pgolf's log.txt or an official-style log with the same line formats)."""
    facts = LogFacts()
    exact = EXACT_LINE.findall(text)
    if exact:
        facts.val_loss, facts.val_bpb = float(exact[-1][1]), float(exact[-1][2])
    steps = [int(s) for s in STEP_LINE.findall(text)]
    early = STOPPING_EARLY.findall(text)
    if early:
        facts.steps = int(early[-1][1])
    elif steps:
        facts.steps = max(steps)
    times = [float(t) for t in TRAIN_TIME.findall(text)]
    if times:
        facts.train_ms = max(times)
    evals = ROUNDTRIP_LINE.findall(text)
    if evals:
        facts.eval_ms = float(evals[-1])
    seed = SEED.search(text)
    if seed:
        facts.seed = int(seed.group(1))
    serialized = SERIALIZED.findall(text)
    if serialized:
        facts.artifact_bytes = int(serialized[-1])
    code = CODE_SIZE.findall(text)
    if code:
        facts.code_bytes = int(code[-1])
    facts.calibration = CALIBRATION.findall(text)
    facts.periodic_validations = len(PERIODIC_VAL.findall(text))
    facts.warnings = [line for line in text.splitlines() if line.startswith("WARNING")]
    calib = TRAIN_CALIBRATION.findall(text)
    if calib:
        facts.train_calibration_s = float(calib[-1])
    split = VAL_SPLIT_LINE.findall(text)
    if split:
        facts.val_split = {"digest": split[-1][0], "verdict": {"official": split[-1][1] == "official"}}
    return facts


@dataclass
class Run:
    """One finished run: where it is, its seed and final score, and the files a submission needs."""

    path: Path
    seed: int | None
    val_loss: float
    val_bpb: float
    tokens_per_byte: float  # scored val tokens / val bytes: BPB = nats per token / ln 2 * tokens_per_byte
    result: dict = field(default_factory=dict)
    config: dict | None = None
    log_path: Path | None = None
    artifact_path: Path | None = None

    @property
    def label(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    def get(self, key: str, default=None):
        return self.result.get(key, default)


def val_key(run: Run) -> str:
    """The first 12 hex digits of the digest of the val split `run` was scored on, or UNRECORDED."""
    split = run.get("val_split")
    digest = split.get("digest") if isinstance(split, dict) else None
    return short_digest(digest) if isinstance(digest, str) and digest else UNRECORDED


def val_official(run: Run) -> bool | None:
    """Whether `run` was scored on the full official val split (None: not recorded)."""
    split = run.get("val_split")
    verdict = split.get("verdict") if isinstance(split, dict) else None
    return bool(verdict.get("official")) if isinstance(verdict, dict) else None


def val_detail(run: Run) -> str:
    """The one-line identity of the val split `run` was scored on (documents, tokens, tail, bytes, tokenizer, digest,
    verdict; `pgolf.data.val_split.describe`), or why it is not known."""
    split = run.get("val_split")
    if not isinstance(split, dict) or not split.get("digest"):
        return "val split: not recorded"
    if "docs" not in split:  # read back from a log line: the digest and the verdict only
        official = (split.get("verdict") or {}).get("official")
        return f"val split: digest {val_key(run)}; {'official' if official else 'NOT official'} (from the log)"
    return describe(split)


def val_label(key: str, runs: list[Run]) -> str:
    """`key` for tables: the digest, marked official when every run of it says so."""
    if key == UNRECORDED:
        return "not recorded"
    return key + (" (official)" if runs and all(val_official(r) for r in runs) else "")


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PgolfError(f"{path}: {what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PgolfError(f"{path}: {what} is not a JSON object")
    return data


def _log_result(facts: LogFacts) -> dict:
    """The result.json fields a log alone tells."""
    out = {"val_loss": facts.val_loss, "val_bpb": facts.val_bpb, "steps": facts.steps, "seed": facts.seed,
           "val_split": facts.val_split}
    if facts.train_ms is not None:
        out["train_seconds"] = round(facts.train_ms / 1000, 4)
    if facts.artifact_bytes is not None and facts.code_bytes is not None:
        out.update(artifact_bytes=facts.artifact_bytes, code_bytes=facts.code_bytes,
                   total_bytes=facts.artifact_bytes + facts.code_bytes)
    return {k: v for k, v in out.items() if v is not None}


def _ratio(val_loss: float, val_bpb: float, result: dict, where: Path) -> float:
    tokens, nbytes = result.get("val_tokens"), result.get("val_bytes")
    if isinstance(tokens, int) and isinstance(nbytes, int) and tokens > 0 and nbytes > 0:
        return tokens / nbytes
    if val_loss > 0 and val_bpb > 0:
        return val_bpb * math.log(2) / val_loss
    raise PgolfError(f"{where}: cannot tell the val split's tokens per byte (no val_tokens/val_bytes, zero score)")


def load_run(path: str | Path) -> Run:
    """A finished run from a run directory or a train log file; an error naming it when it has no final score."""
    path = Path(path)
    if path.is_file():
        facts = parse_log(path.read_text(encoding="utf-8", errors="replace"))
        if facts.val_loss is None or facts.val_bpb is None:
            raise PgolfError(f"{path}: no final score (no `final_..._exact val_loss:... val_bpb:...` line): "
                             "the run did not finish")
        return Run(path, facts.seed, facts.val_loss, facts.val_bpb,
                   _ratio(facts.val_loss, facts.val_bpb, {}, path), result=_log_result(facts), log_path=path)
    if not path.is_dir():
        raise PgolfError(f"{path}: no such run directory or log file")
    log = path / "log.txt"
    config = _read_json(path / "config.json", "config.json") if (path / "config.json").is_file() else None
    if (path / "result.json").is_file():
        result = _read_json(path / "result.json", "result.json")
        try:
            val_loss, val_bpb = float(result["val_loss"]), float(result["val_bpb"])
        except (KeyError, TypeError, ValueError):
            raise PgolfError(f"{path}: result.json has no final val_loss/val_bpb") from None
    elif log.is_file():
        facts = parse_log(log.read_text(encoding="utf-8", errors="replace"))
        if facts.val_loss is None or facts.val_bpb is None:
            raise PgolfError(f"{path}: no final score (no result.json, and log.txt has no final `_exact` line): "
                             "the run did not finish")
        result, val_loss, val_bpb = _log_result(facts), facts.val_loss, facts.val_bpb
    else:
        raise PgolfError(f"{path}: no final score (no result.json or log.txt): not a finished run directory")
    if not (math.isfinite(val_loss) and math.isfinite(val_bpb)):
        raise PgolfError(f"{path}: the final score is not finite (val_loss {val_loss}, val_bpb {val_bpb})")
    seed = result.get("seed")
    if seed is None and config is not None:
        seed = config.get("train", {}).get("seed")
    if seed is None and log.is_file():
        seed = parse_log(log.read_text(encoding="utf-8", errors="replace")).seed
    artifact = path / str(result.get("artifact", "artifact.pgolf"))
    return Run(path, seed, val_loss, val_bpb, _ratio(val_loss, val_bpb, result, path), result=result, config=config,
               log_path=log if log.is_file() else None, artifact_path=artifact if artifact.is_file() else None)


def expand(path: str | Path) -> list[Path]:
    """A records folder (no result.json or log.txt, but train logs `*.log`, as `pgolf pack` writes and the
    official records hold) stands for its logs, in name order; anything else for itself."""
    path = Path(path)
    if path.is_dir() and not (path / "result.json").exists() and not (path / "log.txt").exists():
        logs = sorted(p for p in path.glob("*.log") if p.is_file())
        if logs:
            return logs
    return [path]


def load_runs(paths: list[str | Path]) -> list[Run]:
    """Every run of `paths` (a records folder counting as its train logs), in order; the first that has no final
    score is an error naming it."""
    if not paths:
        raise PgolfError("no runs given")
    return [load_run(p) for path in paths for p in expand(path)]
