"""`pgolf sweep report`: what a study found. The best trials as a table, the parameters' importances (Optuna's
default evaluator, PED-ANOVA), three figures drawn by Optuna's own matplotlib visualization (the objective over
trials, every trial's validation curve over its budget, pruned ones ending early, and the importances), and the best
trial's config written as a preset (`STUDY_DIR/best.toml`), which `pgolf train --preset` and `pgolf seeds --preset`
load by path, so that `pgolf seeds` and `pgolf stats` can confirm it over several seeds.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path

from pgolf.config import SECTIONS, Config
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_output, atomic_write_text
from pgolf.sweep.space import set_text, shown
from pgolf.sweep.study import RESOURCE, optuna, progress
from pgolf.sweep.trial import trial_dir

BEST_PRESET = "best.toml"
MIN_FOR_IMPORTANCE = 3
FIGURES_DIR = "report"
FIGURES = {"history": "plot_optimization_history", "curves": "plot_intermediate_values",
           "importances": "plot_param_importances"}


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    return repr(value)


def preset_text(cfg: Config, header: list[str]) -> str:
    """`cfg` as a preset: every field of every section (so later default changes do not move it), with `header`
    as comments."""
    lines = [f"# {line}" for line in header]
    for section in SECTIONS:
        lines += ["", f"[{section}]"]
        obj = getattr(cfg, section)
        lines += [f"{f.name} = {toml_value(getattr(obj, f.name))}" for f in dataclasses.fields(obj)]
    return "\n".join(lines) + "\n"


def best_config(best, spec: dict, study_dir: Path) -> Config:
    """The config the best trial trained with: its run directory's config.json, else rebuilt from its parameters."""
    from pgolf.options import resolve_config

    path = Path(best.user_attrs.get("run_dir") or trial_dir(study_dir, best.number)) / "config.json"
    if path.is_file():
        return Config.from_dict(json.loads(path.read_text(encoding="utf-8")))
    return resolve_config(spec["preset"], [*spec["sets"], *(f"{k}={set_text(v)}" for k, v in best.params.items())])


def write_best_preset(study, spec: dict, study_dir: Path) -> Path:
    best = study.best_trial
    cfg = best_config(best, spec, study_dir)
    header = [f"The best trial of sweep study {study.study_name!r}: trial {best.number}, val_bpb {best.value:.8f} "
              f"({spec['objective']}).",
              f"Preset {spec['preset']}; fixed settings: {' '.join(spec['sets']) or 'none'}.",
              "Searched: " + " ".join(f"{k}={set_text(v)}" for k, v in best.params.items()) + ".",
              "Every setting is written out; the sweep's short budget is in [train] (iterations, "
              "max_wallclock_seconds): change it for full runs.",
              f"Confirm it: pgolf seeds --preset {study_dir / BEST_PRESET} --seeds 1337,42,2025 --data DATA "
              "--out runs/best-seeds"]
    path = study_dir / BEST_PRESET
    atomic_write_text(path, preset_text(cfg, header))
    return path


def importances(study) -> dict[str, float] | None:
    """Each parameter's importance, or None with fewer than MIN_FOR_IMPORTANCE complete trials or when the evaluator
    says it cannot tell (PED-ANOVA compares the top 10% of the trials with the rest: it needs a few of them)."""
    opt = optuna()
    complete = study.get_trials(deepcopy=False, states=(opt.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_FOR_IMPORTANCE or not any(t.params for t in complete):
        return None
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            found = opt.importance.get_param_importances(study)
    except (RuntimeError, ValueError):  # e.g. every complete trial has the same parameters
        return None
    # the evaluator warns, and returns equal shares, when its top trials cannot be told from the rest
    return None if any(issubclass(w.category, UserWarning) for w in caught) else found


def write_figures(study, out_dir: Path, with_importances: bool = True) -> list[Path]:
    """The FIGURES as PNGs in `out_dir` (those Optuna can draw with the trials so far); [] without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm

    written = []
    for name, function in FIGURES.items():
        path = out_dir / f"{name}.png"
        try:
            if name == "importances" and not with_importances:
                raise ValueError("too few trials")
            ax = getattr(ovm, function)(study)
        except (ValueError, RuntimeError):  # too few trials for this figure: no figure, not an old one either
            plt.close("all")
            path.unlink(missing_ok=True)
            continue
        if name == "history":
            ax.set_ylabel("val_bpb (the objective)")
        if name == "curves":
            ax.set_xlabel(f"training budget used (1/{RESOURCE})")
            ax.set_ylabel("periodic val_bpb")
            legend = ax.get_legend()
            if legend is not None and len(study.trials) > 12:
                legend.remove()
        fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
        fig.set_size_inches(8, 5)
        fig.tight_layout()
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def report(study, spec: dict, study_dir: Path, *, storage: str, top: int = 10, figures: bool = True) -> str:
    """The report's text; writes the figures and the best preset as it goes (module docstring)."""
    opt = optuna()
    state = opt.trial.TrialState
    objective = "val_bpb of the artifact file" if spec["objective"] == "artifact" else "pre-quant val_bpb"
    lines = [f"study {study.study_name} ({storage}): {progress(study)}",
             f"preset {spec['preset']}" + (f" with {' '.join(spec['sets'])}" if spec["sets"] else "")
             + f"; objective: {objective} (lower is better)"]
    complete = sorted(study.get_trials(deepcopy=False, states=(state.COMPLETE,)), key=lambda t: t.value)
    if not complete:
        lines.append("no complete trial yet: nothing to rank")
        return "\n".join(lines) + "\n"
    names = sorted({k for t in complete for k in t.params})
    lines += ["", f"best {min(top, len(complete))} of {len(complete)} complete trial(s):", "",
              "| trial | val_bpb | steps | " + " | ".join(names) + " | run |",
              "|---:|---:|---:|" + "---|" * len(names) + "---|"]
    for t in complete[:top]:
        cells = [shown(t.params[n]) if n in t.params else "" for n in names]
        lines.append(f"| {t.number} | {t.value:.6f} | {t.user_attrs.get('steps', '')} | " + " | ".join(cells)
                     + f" | {t.user_attrs.get('run_dir', '')} |")
    pruned = study.get_trials(deepcopy=False, states=(state.PRUNED,))
    if pruned:
        at = [f"{t.number} at {t.last_step / RESOURCE:.0%}" for t in pruned if t.last_step is not None]
        lines += ["", f"pruned ({len(pruned)}): " + ", ".join(at)]
    failed = [t for t in study.get_trials(deepcopy=False, states=(state.FAIL,)) if t.user_attrs.get("error")]
    if failed:
        lines += ["", f"failed ({len(failed)}): " + "; ".join(f"{t.number}: {t.user_attrs['error']}" for t in failed)]
    found = importances(study)
    lines += [""]
    if found is None:
        lines.append("parameter importances: too few complete trials to tell them apart (PED-ANOVA compares the "
                     "best 10% with the rest)")
    else:
        lines.append(f"parameter importances (PED-ANOVA over {len(complete)} complete trials):")
        width = max(map(len, found))
        lines += [f"  {name:<{width}}  {value:.3f}  {'#' * round(40 * value)}" for name, value in found.items()]
    path = write_best_preset(study, spec, study_dir)
    lines += ["", f"best: trial {complete[0].number}, val_bpb {complete[0].value:.6f}; its config as a preset: {path}",
              f"  confirm: pgolf seeds --preset {path} --seeds 1337,42,2025 --data DATA --out runs/best-seeds"]
    if figures:
        written = write_figures(study, study_dir / FIGURES_DIR, with_importances=found is not None)
        lines.append("figures: " + (", ".join(map(str, written)) if written else
                                    "none (pip install matplotlib, or 'pgolf[plots]')"))
    return "\n".join(lines) + "\n"


def check_study_dir(study_dir: Path) -> None:
    if not study_dir.is_dir():
        raise PgolfError(f"{study_dir}: no such sweep folder")
