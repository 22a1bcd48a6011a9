"""`pgolf leaderboard`: a markdown leaderboard of configurations, from run directories and records folders, sorted by
mean val_bpb (lower is better).

An entry is either
- a packed records folder (`pgolf pack` output, with submission.json): its seeds are the `seed_results`, its bytes
  the claimed `bytes_total`, its name the submission's `name`;
- a records folder without submission.json (an official one): its `*.log` train logs, one entry;
- finished run directories (or train logs), grouped into configurations as `pgolf compare` does (configs equal up
  to the seed, `pgolf.submit.compare.group_runs`); its bytes are the largest seed's total.
A directory that is none of these stands for the runs and records folders directly inside it.

Each row after the first says whether the row above it improves on it by the significance rule of
docs/rules.md#submission-process (0.005 nats per token at p < 0.01, the one-sided Welch test of `pgolf stats`,
`pgolf.submit.stats.compute_stats`); with fewer than two seeds on either side the test cannot be run and the row
says so.

Entries are ranked only against entries scored on the same val split (`pgolf.submit.runs.val_key`, the digest of
the val tokens): with several splits the leaderboard is one table per split, each ranked on its own. A configuration
scored on two splits is two entries.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from pgolf.errors import PgolfError
from pgolf.submit.compare import group_runs
from pgolf.submit.runs import Run, _ratio, expand, load_run, val_detail, val_key, val_label
from pgolf.submit.stats import ALPHA, MARGIN_NATS, compute_stats, mean, sample_std


@dataclass
class Entry:
    label: str
    source: str
    runs: list[Run]
    bytes_total: int | None

    @property
    def val_bpb(self) -> float:
        return mean([r.val_bpb for r in self.runs])

    @property
    def std(self) -> float | None:
        return sample_std([r.val_bpb for r in self.runs])

    @property
    def seeds(self) -> list:
        return [r.seed for r in self.runs]

    @property
    def val_split(self) -> str:
        """The val split's key (`val_key`) shared by the entry's runs; "mixed" when they differ."""
        keys = {val_key(r) for r in self.runs}
        return keys.pop() if len(keys) == 1 else "mixed"


def _is_run(path: Path) -> bool:
    return path.is_file() or (path / "result.json").is_file() or (path / "log.txt").is_file()


def _is_records(path: Path) -> bool:
    return (path / "submission.json").is_file() or (not _is_run(path) and any(path.glob("*.log")))


def _submission_entry(folder: Path) -> Entry:
    where = folder / "submission.json"
    try:
        sub = json.loads(where.read_text(encoding="utf-8"))
        seeds = sub["seed_results"]
        if not isinstance(sub, dict) or not isinstance(seeds, list) or not seeds:
            raise TypeError
        runs = []
        for s in seeds:
            loss, bpb = float(s["val_loss"]), float(s["val_bpb"])
            if not (math.isfinite(loss) and math.isfinite(bpb)):
                raise ValueError
            log = folder / str(s.get("log") or "submission.json")
            result = dict(s, total_bytes=s.get("bytes_total"))
            runs.append(Run(log, s.get("seed"), loss, bpb, _ratio(loss, bpb, s, where), result=result))
    except json.JSONDecodeError as exc:
        raise PgolfError(f"{where}: not valid JSON ({exc})") from None
    except (KeyError, TypeError, ValueError):
        raise PgolfError(f"{where}: no seed_results with a val_loss and val_bpb per seed") from None
    name = sub.get("name") or folder.name
    return Entry(str(name), str(folder), runs, sub.get("bytes_total"))


def _collect(paths: list[str | Path]) -> tuple[list[Entry], list[Run]]:
    """Records folders as entries, the rest as runs (still to be grouped)."""
    entries, runs = [], []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise PgolfError(f"{path}: no such run directory, records folder or log file")
        if path.is_dir() and not _is_run(path) and not _is_records(path):
            inner = sorted(p for p in path.iterdir() if p.is_dir() and (_is_run(p) or _is_records(p)))
            if not inner:
                raise PgolfError(f"{path}: neither a run directory nor a records folder, and holds none")
        else:
            inner = [path]
        for p in inner:
            if p.is_dir() and (p / "submission.json").is_file():
                entries.append(_submission_entry(p))
            elif p.is_dir() and _is_records(p):
                logs = [load_run(log) for log in expand(p)]
                totals = [r.get("total_bytes") for r in logs]
                entries.append(Entry(p.name, str(p), logs, max(totals) if None not in totals else None))
            else:
                runs.append(load_run(p))
    return entries, runs


def build_leaderboard(paths: list[str | Path], group_by: str = "config") -> list[Entry]:
    """The entries of `paths`, best (lowest mean val_bpb) first."""
    if not paths:
        raise PgolfError("leaderboard: no runs or records folders given")
    entries, runs = _collect(paths)
    for group in group_runs(runs, by=group_by) if runs else []:
        by_split: dict[str, list[Run]] = {}
        for r in group.runs:
            by_split.setdefault(val_key(r), []).append(r)
        for key, split_runs in by_split.items():
            totals = [r.get("total_bytes") for r in split_runs]
            parents: dict[str, list[str]] = {}
            for r in split_runs:
                parents.setdefault(str(r.path.parent), []).append(r.name)
            source = "; ".join(f"{parent}/{{{','.join(names)}}}" if len(names) > 1 else f"{parent}/{names[0]}"
                               for parent, names in parents.items())
            label = group.label if len(by_split) == 1 else f"{group.label} [val {val_label(key, split_runs)}]"
            entries.append(Entry(label, source, split_runs, max(totals) if None not in totals else None))
    return sorted(entries, key=lambda e: e.val_bpb)


def _vs_above(above: Entry, row: Entry, margin_nats: float, alpha: float) -> dict:
    """`pgolf stats`'s comparison of the row above (candidate) against this row (baseline)."""
    return compute_stats(above.runs, row.runs, margin_nats=margin_nats, alpha=alpha).comparison()


def leaderboard_markdown(entries: list[Entry], margin_nats: float = MARGIN_NATS, alpha: float = ALPHA) -> str:
    """One ranked table per val split (a heading per split when there are several), then the sources."""
    splits: dict[str, list[Entry]] = {}
    for e in entries:
        splits.setdefault(e.val_split, []).append(e)
    lines: list[str] = []
    if len(splits) > 1:
        lines += [f"Entries were scored on {len(splits)} different val splits: each table ranks one split; scores "
                  "on different splits are not comparable.", ""]
    for key, members in splits.items():
        if len(splits) > 1:
            label = "mixed (seeds on different splits)" if key == "mixed" else val_label(
                key, [r for e in members for r in e.runs])
            lines += [f"### val split {label}", ""]
        lines += _ranked_table(members, margin_nats, alpha) + ["", val_detail(members[0].runs[0]), ""]
    lines += [f"The last column: whether the row above improves on this row by at least {margin_nats} nats per "
              f"token at p < {alpha} (one-sided Welch t-test, as `pgolf stats`).", "",
              "Sources:", ""]
    lines += [f"- {e.label}: {e.source}" for e in entries]
    return "\n".join(lines) + "\n"


def _ranked_table(entries: list[Entry], margin_nats: float, alpha: float) -> list[str]:
    lines = ["| # | entry | seeds | mean val_bpb | std | bytes (max total) | row above better by the rule? |",
             "|---:|---|---|---:|---:|---:|---|"]
    for i, e in enumerate(entries):
        if i == 0:
            verdict = "—"
        else:
            comp = _vs_above(entries[i - 1], e, margin_nats, alpha)
            if comp["p"] is None:
                verdict = "n/a (needs 2+ seeds on both rows)"
            else:
                verdict = (f"{'**yes**' if comp['meets'] else 'no'}: {comp['improvement_nats']:+.5f} nats, "
                           f"p = {comp['p']:.3g}")
        seeds = ", ".join("?" if s is None else str(s) for s in e.seeds)
        std = "n/a" if e.std is None else f"{e.std:.6f}"
        nbytes = "n/a" if e.bytes_total is None else f"{e.bytes_total:,}"
        lines.append(f"| {i + 1} | {e.label} | {len(e.runs)}: {seeds} | {e.val_bpb:.6f} | {std} | {nbytes} | "
                     f"{verdict} |")
    return lines
