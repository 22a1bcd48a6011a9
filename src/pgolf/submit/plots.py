"""`pgolf plot`: PNG figures of finished runs, drawn with matplotlib (the optional `plots` extra; Agg backend).

- `curves.png`: train loss and val_bpb against training wall time and against training tokens, one line per run
  (from metrics.jsonl; from log.txt's `step:` lines when a run has none, e.g. a bare train log);
- `bytes.png`: the compressed bytes of each tensor group of each run's artifact (`describe_artifact`, the data of
  `pgolf inspect --json`; the per-tensor sizes are each tensor compressed alone, an estimate of its share);
- `ablation.png`: mean final val_bpb per configuration (`pgolf.submit.compare.group_runs`) with the seeds' sample
  standard deviation as error bars, and the seeds as dots; horizontal bars, so that each configuration's label (the
  settings that differ) is wrapped beside its bar instead of overlapping its neighbours under the axis.

Legends sit outside the axes (matplotlib's constrained layout makes room for them), so they never cover the data.

Every figure is written atomically (`pgolf.fileio.atomic_write_bytes`).
"""

from __future__ import annotations

import io
import json
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_bytes, refuse_existing
from pgolf.submit.compare import group_runs
from pgolf.submit.runs import Run, load_runs
from pgolf.submit.stats import mean, sample_std

FIGURES = ("curves", "bytes", "ablation")
LOG_STEP = re.compile(r"^step:(\d+)/\d+ (train_loss:(\S+)|val_loss:\S+ val_bpb:(\S+)) train_time:(\d+(?:\.\d+)?)ms",
                      re.M)


def _matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise PgolfError("plot: matplotlib is not installed (pip install 'pgolf[plots]' or pip install matplotlib)") \
            from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# ---------------------------------------------------------------------------------------------- curves
@dataclass
class Curves:
    """(step, seconds, loss-or-bpb) points of one run's training."""

    train: list[tuple[int, float, float]] = field(default_factory=list)
    val: list[tuple[int, float, float]] = field(default_factory=list)


def tokens_per_step(run: Run) -> float | None:
    steps, tokens = run.get("steps"), run.get("train_tokens")
    if steps and tokens:
        return tokens / steps
    batch = ((run.config or {}).get("train") or {}).get("train_batch_tokens")
    return float(batch) if batch else None


def read_curves(run: Run) -> Curves:
    """The run's train-loss and periodic val_bpb points, from metrics.jsonl, else from its log."""
    curves = Curves()
    metrics = run.path / "metrics.jsonl" if run.path.is_dir() else None
    if metrics is not None and metrics.is_file():
        for n, line in enumerate(metrics.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise PgolfError(f"{metrics}:{n}: not a JSON record") from None
            if not isinstance(rec, dict) or "step" not in rec or "time_s" not in rec:
                continue  # the final roundtrip score has no training time
            if "train_loss" in rec:
                curves.train.append((int(rec["step"]), float(rec["time_s"]), float(rec["train_loss"])))
            elif "val_bpb" in rec:
                curves.val.append((int(rec["step"]), float(rec["time_s"]), float(rec["val_bpb"])))
    elif run.log_path is not None:
        for m in LOG_STEP.finditer(run.log_path.read_text(encoding="utf-8", errors="replace")):
            step, seconds = int(m.group(1)), float(m.group(5)) / 1000
            if m.group(3) is not None:
                curves.train.append((step, seconds, float(m.group(3))))
            else:
                curves.val.append((step, seconds, float(m.group(4))))
    return curves


def _run_label(run: Run) -> str:
    parts = [run.get("preset") or (run.config or {}).get("preset") or run.path.parent.name]
    if run.seed is not None:
        parts.append(f"seed {run.seed}")
    return f"{' '.join(map(str, parts))} ({run.name})"


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
    return path


def _curve_labels(runs: list[Run]) -> list[str]:
    """Each run's legend entry: `_run_label`, or with several configurations among the runs, its configuration's
    label (`group_runs`) and seed, so that two runs of the same preset and seed can be told apart."""
    groups = group_runs(runs, width=48)
    if len(groups) < 2:
        return [_run_label(run) for run in runs]
    label = {id(run): g.label for g in groups for run in g.runs}
    return [f"{label[id(run)]}, seed {run.seed}" if run.seed is not None else f"{label[id(run)]} ({run.name})"
            for run in runs]


def plot_curves(plt, data: list[tuple[Run, Curves, float | None]], path: Path) -> Path | None:
    """`data`: (run, its curves, its tokens per step) triples. The legend sits outside the four axes, on the right,
    so that it never covers a curve."""
    data = [d for d in data if d[1].train or d[1].val]
    if not data:
        return None
    labels = _curve_labels([run for run, _, _ in data])
    fig, axes = plt.subplots(2, 2, figsize=(11 + 0.06 * max(map(len, labels)), 7.5), squeeze=False,
                             layout="constrained")
    for i, (run, curves, tps) in enumerate(data):
        label, color = labels[i], f"C{i % 10}"
        for row, points in ((0, curves.train), (1, curves.val)):
            if not points:
                continue
            steps, seconds, values = zip(*points)
            style = "-" if row == 0 else "o-"
            axes[row][0].plot(seconds, values, style, label=label, color=color, markersize=3)
            if tps is not None:
                axes[row][1].plot([s * tps for s in steps], values, style, label=label, color=color, markersize=3)
    for row, what in ((0, "train loss (nats/token)"), (1, "val_bpb (periodic, unquantized)")):
        axes[row][0].set(xlabel="training wall time (s)", ylabel=what)
        axes[row][1].set(xlabel="training tokens", ylabel=what)
        for ax in axes[row]:
            ax.grid(alpha=0.3)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside right upper", fontsize=8,
               ncols=1 if len(data) <= 24 else 2)
    fig.suptitle("training curves")
    out = _save(fig, path)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------- artifact bytes
def group_bytes(artifact: Path) -> dict[str, int]:
    """Compressed bytes per tensor group of an artifact (each tensor compressed alone), plus `header+overhead`."""
    from pgolf.artifact.format import describe_artifact

    try:
        rows = describe_artifact(artifact)
    except PgolfError:
        raise
    except Exception as exc:  # a damaged artifact: name it
        raise PgolfError(f"{artifact}: cannot read the artifact ({exc})") from None
    out: dict[str, int] = {}
    for row in rows:
        if row["name"] == "TOTAL":
            out["header+overhead"] = row["overhead_bytes"]
            continue
        key = row.get("group") or "other"
        out[key] = out.get(key, 0) + row["compressed_bytes"]
    return out


def plot_bytes(plt, data: list[tuple[Run, dict[str, int]]], path: Path) -> Path | None:
    """`data`: (run, `group_bytes` of its artifact) pairs."""
    if not data:
        return None
    groups = sorted({g for _, d in data for g in d}, key=lambda g: (g == "header+overhead", g))
    height = 0.8 / len(data)
    fig, ax = plt.subplots(figsize=(9, 1.2 + 0.45 * len(groups) * max(1, len(data) * 0.6)))
    for i, (run, d) in enumerate(data):
        ys = [j + i * height for j in range(len(groups))]
        ax.barh(ys, [d.get(g, 0) for g in groups], height=height,
                label=f"{_run_label(run)}: {run.artifact_path.stat().st_size:,} B")
    ax.set_yticks([j + 0.4 - height / 2 for j in range(len(groups))], groups)
    ax.invert_yaxis()
    ax.set_xlabel("compressed bytes (each tensor compressed alone)")
    ax.set_title("artifact bytes per tensor group")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


# ---------------------------------------------------------------------------------------------- ablation
def plot_ablation(plt, runs: list[Run], path: Path, group_by: str = "config") -> Path:
    """One horizontal bar per configuration, its label (the settings that differ, `group_runs`) wrapped beside it
    on the left, where a long label has room and never overlaps the next one."""
    groups = group_runs(runs, by=group_by, width=400)
    means = [mean([r.val_bpb for r in g.runs]) for g in groups]
    stds = [sample_std([r.val_bpb for r in g.runs]) or 0.0 for g in groups]
    labels = [textwrap.fill(g.label, 44) + f"\n(n={len(g.runs)})" for g in groups]
    row_inches = max(0.45, 0.16 * max(label.count("\n") + 1 for label in labels))
    fig, ax = plt.subplots(figsize=(10, max(3.0, 1.4 + row_inches * len(groups))), layout="constrained")
    ys = list(range(len(groups)))
    ax.barh(ys, means, xerr=stds, capsize=5, height=0.6, color="#8fb3d9", edgecolor="#2a5783")
    for y, g in zip(ys, groups):
        ax.plot([r.val_bpb for r in g.runs], [y] * len(g.runs), "k.", markersize=6)
    lo = min(min(r.val_bpb for r in g.runs) for g in groups)
    hi = max(max(m + s, max(r.val_bpb for r in g.runs)) for m, s, g in zip(means, stds, groups))
    pad = max(hi - lo, 1e-3) * 0.5
    ax.set_xlim(lo - pad, hi + pad)
    ax.set_yticks(ys, labels, fontsize=8)
    ax.invert_yaxis()  # the first configuration on top
    ax.set_xlabel("final val_bpb (mean ± sample std; dots: the runs)")
    ax.set_title("ablation: final val_bpb per configuration")
    ax.grid(axis="x", alpha=0.3)
    out = _save(fig, path)
    plt.close(fig)
    return out


def make_plots(paths: list[str | Path], out: str | Path, figures: tuple[str, ...] = FIGURES,
               group_by: str = "config", overwrite: bool = False) -> list[Path]:
    """Write the figures of the runs at `paths` into `out`; the paths written (a figure with no data is skipped).
    A figure already in `out` is refused unless `overwrite`."""
    runs = load_runs(paths)
    plt = _matplotlib()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PgolfError(f"{out}: is a file, not a directory")
    refuse_existing([out / f"{name}.png" for name in figures], overwrite)
    # read everything first, so that a bad file leaves no figure half-written
    curves = [(r, read_curves(r), tokens_per_step(r)) for r in runs] if "curves" in figures else []
    nbytes = ([(r, group_bytes(r.artifact_path)) for r in runs if r.artifact_path is not None]
              if "bytes" in figures else [])
    written = []
    if "curves" in figures:
        written.append(plot_curves(plt, curves, out / "curves.png"))
    if "bytes" in figures:
        written.append(plot_bytes(plt, nbytes, out / "bytes.png"))
    if "ablation" in figures:
        written.append(plot_ablation(plt, runs, out / "ablation.png", group_by))
    return [p for p in written if p is not None]
