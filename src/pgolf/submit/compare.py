"""`pgolf compare`: one row per finished run (preset, seed, steps, training seconds, val_bpb, artifact and total
bytes, eval mode), the best val_bpb marked; and the grouping of runs into configurations that `pgolf plot`'s ablation
bars and `pgolf leaderboard` share.

Runs are read with `pgolf.submit.runs.load_runs` (a run directory, a train log, or a records folder standing for its
`*.log` train logs), so a run without a final score is an error naming it.

A configuration is a run's config.json without its seed: runs whose configs differ only in `train.seed` are seeds of
one configuration. Its label is the preset plus the settings that differ between the configurations being shown
(`record-cpu quant.codec=ans`), so an ablation's bars are named by what was varied. A run without config.json (a bare
train log) is its own configuration, labelled by its folder (a records folder's logs are one configuration).

Each row names the val split it was scored on (the digest's first digits, `pgolf.submit.runs.val_key`); "best" and
"Δ best" are taken within each split, and a table of several splits says so under it: a score on another val set
is not better or worse, only different.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pgolf.submit.runs import Run, val_detail, val_key, val_label


# ---------------------------------------------------------------------------------------------- configurations
def _flat_config(run: Run) -> dict | None:
    """The run's settings as `section.field` -> JSON text, seed left out; None without a config.json."""
    if run.config is None:
        return None
    flat = {}
    for section, values in run.config.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if (section, key) != ("train", "seed"):
                    flat[f"{section}.{key}"] = json.dumps(value, sort_keys=True)
        else:
            flat[section] = json.dumps(values, sort_keys=True)
    return flat


def _preset(run: Run) -> str:
    preset = run.get("preset") or (run.config or {}).get("preset")
    return str(preset) if preset else ""


@dataclass
class Group:
    """The runs of one configuration (seeds of it), in the order given."""

    key: str
    label: str
    runs: list[Run] = field(default_factory=list)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 3] + "..."


def group_runs(runs: list[Run], by: str = "config", width: int = 60) -> list[Group]:
    """The configurations of `runs` in order of first appearance; `by="preset"` groups by preset name alone."""
    flats = [_flat_config(r) for r in runs]
    keys = []
    for run, flat in zip(runs, flats):
        if flat is None:  # a bare log: its folder is its configuration
            keys.append(f"path:{run.path.parent if run.path.is_file() else run.path}")
        elif by == "preset":
            keys.append(f"preset:{_preset(run)}")
        else:
            keys.append("config:" + json.dumps(flat, sort_keys=True))
    groups: dict[str, Group] = {}
    first_flat: dict[str, dict | None] = {}
    for run, flat, key in zip(runs, flats, keys):
        if key not in groups:
            groups[key] = Group(key, "")
            first_flat[key] = flat
        groups[key].runs.append(run)
    # label: the preset plus the settings that differ between the configurations
    by_preset: dict[str, list[dict]] = {}  # the settings that differ between configurations of one preset
    for key, group in groups.items():
        if key.startswith("config:"):
            by_preset.setdefault(_preset(group.runs[0]), []).append(first_flat[key])
    varying = {p: sorted({name for f in configs for name in f if len({c.get(name) for c in configs}) > 1}
                         - {"preset"}) for p, configs in by_preset.items()}
    for key, group in groups.items():
        run, flat = group.runs[0], first_flat[key]
        if flat is None:
            group.label = run.path.parent.name if run.path.is_file() else run.path.name
            continue
        parts = [_preset(run) or "?"]
        if key.startswith("config:"):
            parts += [f"{name}={json.loads(flat[name]) if name in flat else 'n/a'}"
                      for name in varying[_preset(run)]]
        group.label = _short(" ".join(parts), width)
    labels = [g.label for g in groups.values()]
    for i, group in enumerate(groups.values()):  # still ambiguous after truncation: number them
        if labels.count(group.label) > 1:
            group.label = f"{group.label} #{i + 1}"
    return list(groups.values())


# ---------------------------------------------------------------------------------------------- the table
COLUMNS = ("run", "preset", "seed", "steps", "train s", "val_bpb", "Δ best", "artifact bytes", "total bytes",
           "eval mode", "val split")


def _n(value, spec: str = "") -> str:
    return "n/a" if value is None else format(value, spec)


def compare_rows(runs: list[Run]) -> list[dict]:
    """One dict per run, in the given order; `best` marks the lowest val_bpb of its val split (every run tied for
    it), and `delta_best` is measured from there."""
    by_split: dict[str, list[Run]] = {}
    for r in runs:
        by_split.setdefault(val_key(r), []).append(r)
    best = {key: min(r.val_bpb for r in group) for key, group in by_split.items()}
    rows = []
    for r in runs:
        key = val_key(r)
        rows.append({"run": r.label, "preset": _preset(r) or None, "seed": r.seed, "steps": r.get("steps"),
                     "train_seconds": r.get("train_seconds"), "val_bpb": r.val_bpb, "delta_best": r.val_bpb - best[key],
                     "artifact_bytes": r.get("artifact_bytes"), "total_bytes": r.get("total_bytes"),
                     "eval_mode": r.get("eval_mode"), "best": r.val_bpb == best[key], "val_split": key,
                     "val_label": val_label(key, by_split[key]), "val_detail": val_detail(r)})
    return rows


def splits_note(rows: list[dict]) -> str:
    """Lines under a table: what each val split is (one line per split), and, when there are several, that best
    and Δ are taken within each."""
    legend = {}
    for row in rows:
        legend.setdefault(row["val_label"], row["val_detail"])
    lines = [f"{label}: {detail}" for label, detail in legend.items()]
    if len(legend) > 1:
        lines.insert(0, f"Scored on {len(legend)} different val splits: best and Δ are within each split; scores on "
                        "different splits are not comparable.")
    return "\n".join(lines)


def _cells(row: dict) -> tuple[str, ...]:
    return (row["run"], row["preset"] or "n/a", _n(row["seed"]), _n(row["steps"]), _n(row["train_seconds"], ".1f"),
            f"{row['val_bpb']:.8f}", f"{row['delta_best']:+.6f}", _n(row["artifact_bytes"], ","),
            _n(row["total_bytes"], ","), row["eval_mode"] or "n/a", row["val_label"])


def compare_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for row in rows:
        cells = list(_cells(row))
        if row["best"]:
            cells[0], cells[5] = f"**{cells[0]}** (best)", f"**{cells[5]}**"
        lines.append("| " + " | ".join(cells) + " |")
    note = splits_note(rows)
    return "\n".join(lines + (["", note] if note else []))


def compare_text(rows: list[dict]) -> str:
    """An aligned plain-text table, the best run marked with `*`."""
    body = [("*" if row["best"] else " ",) + _cells(row) for row in rows]
    head = ("",) + COLUMNS
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    right = {3, 4, 5, 6, 7, 8, 9}
    out = ["  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths))).rstrip()
           for line in [head, *body]]
    out.insert(1, "-" * len(out[0]))
    note = splits_note(rows)
    return "\n".join(out) + "\n* best val_bpb of its val split\n" + note
