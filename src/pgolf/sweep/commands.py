"""`pgolf sweep` and `pgolf sweep report`, registered on the CLI from here (`add_commands`), as the submission
commands are from pgolf/submit/commands.py: the parsers inherit `pgolf.cli`'s parser class, so a bad command line
is one `pgolf: error:` line and exit 2, like a `PgolfError` raised here (docs/sweep.md documents both).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pgolf.cli_args import number, positive
from pgolf.errors import PgolfError


def default_study_name(preset: str, space: Path) -> str:
    return f"{Path(preset).stem}-{space.stem}"


def _budget_sets(args: argparse.Namespace) -> list[str]:
    """Unlike `pgolf.cli_args.budget_sets`, --max-seconds is each trial's training clock (train.max_wallclock_seconds):
    the pruner measures budget fractions on it, which a bound on the whole command would not keep comparable."""
    sets = list(args.set or [])
    if args.max_steps is not None:
        sets.append(f"train.iterations={args.max_steps}")
    if args.max_seconds is not None:
        sets.append(f"train.max_wallclock_seconds={args.max_seconds}")
    return sets


def _cmd_sweep(args: argparse.Namespace) -> int:
    if args.sweep_command == "report":
        return _cmd_report(args)
    missing = [flag for flag, value in (("--preset", args.preset), ("--space", args.space), ("--trials", args.trials),
                                        ("--data", args.data)) if value is None]
    if missing:
        raise PgolfError(f"sweep: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required to run a study "
                         "(or: pgolf sweep report STUDY_DIR)")
    return run_sweep(args)


def run_sweep(args: argparse.Namespace) -> int:
    from pgolf.data.manifest import check_data_dir
    from pgolf.options import resolve_config
    from pgolf.sweep import study as st
    from pgolf.sweep.space import load_space
    from pgolf.sweep.trial import Plan
    from pgolf.sweep.worker import Workers, run_workers
    from pgolf.train.pool import plan_slots

    space = load_space(args.space)
    sets = _budget_sets(args)
    fixed = {s.split("=", 1)[0].strip() for s in sets}
    both = [p.name for p in space.params if p.name in fixed]
    if both:
        raise PgolfError(f"sweep: {both[0]} is both searched ({args.space}) and fixed by --set; drop one")
    base = resolve_config(args.preset, sets)
    if args.pruner != "none" and base.train.val_loss_every <= 0:
        raise PgolfError(f"sweep: --pruner {args.pruner} reads the runs' periodic val_bpb, and train.val_loss_every "
                         "is 0; set it (e.g. --set train.val_loss_every=N for ten validations), or --pruner none")
    check_data_dir(args.data, expected_vocab=base.model.vocab_size)
    slots = plan_slots(args.workers, device=base.train.device, nproc_per_node=args.nproc_per_node)
    name = args.study or default_study_name(args.preset, args.space)
    study_dir = args.out or Path("sweeps") / name
    if study_dir.exists() and not study_dir.is_dir():
        raise PgolfError(f"sweep: --out {study_dir} is a file, not a directory")
    storage_spec = args.storage or st.default_storage(study_dir)
    spec = st.StudySpec(args.preset, tuple(sets), space.text, args.objective)
    storage = st.open_storage(args.storage, study_dir)
    study = st.open_study(storage, name, spec, sampler=st.make_sampler(args.sampler, args.startup_trials, args.seed),
                          pruner=st.make_pruner(args.pruner, args.prune_from, args.reduction_factor))
    st.write_study_file(study_dir, storage_spec, name, spec)
    grace = args.grace if args.grace is not None else 4 * args.heartbeat
    plan = Plan(study=name, study_dir=study_dir, preset=args.preset, sets=tuple(sets), space=space, base=base,
                data=args.data, objective=args.objective, nproc_per_node=args.nproc_per_node)
    print(f"sweep: study {name} in {st.shown_storage(storage_spec)}, folder {study_dir}")
    print(f"  space ({args.space}): " + "; ".join(p.describe() for p in space.params))
    print(f"  {args.trials} trials in all; now {st.progress(study)}; sampler {args.sampler}, pruner {args.pruner}"
          + (f" from {args.prune_from:.0%} of the budget" if args.pruner != "none" else "")
          + f"; {len(slots)} worker(s) here: " + ", ".join(s.describe() for s in slots), flush=True)
    workers = Workers(study, plan, args.trials, heartbeat_s=args.heartbeat, grace_s=grace, echo=sys.stdout)
    try:
        run_workers(workers, slots)
    except KeyboardInterrupt:
        print(f"sweep: interrupted; the running trials were stopped at a checkpoint and queued again: run the same "
              f"command to continue study {name}", file=sys.stderr)
        return 130
    print(f"sweep: study {name}: {st.progress(study)}")
    try:
        best = study.best_trial
        print(f"best: trial {best.number}, val_bpb {best.value:.6f} ({args.objective}): {space.shown(best.params)}")
    except ValueError:
        print("best: none (no complete trial)")
    print(f"report: pgolf sweep report {study_dir}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from pgolf.sweep import study as st
    from pgolf.sweep.report import report

    study_dir = args.study_dir
    if not study_dir.is_dir():
        raise PgolfError(f"sweep report: {study_dir}: no such sweep folder")
    info = st.read_study_file(study_dir) if (args.storage is None or args.report_study is None) else {}
    storage_spec = args.storage or info.get("storage")
    if storage_spec is None or ":***@" in storage_spec:
        raise PgolfError(f"sweep report: {study_dir}: the storage URL's password is not written down; pass --storage")
    name = args.report_study or info["study"]
    study = st.open_study(st.open_storage(storage_spec, study_dir), name, None)
    spec = study.user_attrs.get("pgolf")
    if spec is None:
        raise PgolfError(f"sweep report: study {name!r} was not made by pgolf sweep (no preset, space or objective)")
    print(report(study, spec, study_dir, storage=st.shown_storage(storage_spec), top=args.top,
                 figures=not args.no_figures), end="")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add `pgolf sweep` (and its `report`) to `pgolf`'s subparsers."""
    from pgolf.sweep.study import PRUNERS, SAMPLERS
    from pgolf.sweep.trial import OBJECTIVES

    p = sub.add_parser("sweep", help="hyperparameter search on Optuna: TPE, pruning on the periodic val_bpb, "
                                     "workers on any number of machines (pgolf sweep report: the results)",
                       description="Search the --set fields of SPACE.toml for the lowest val_bpb (docs/sweep.md). "
                                   "Any number of pgolf sweep processes on one --storage and --study cooperate.")
    p.add_argument("--preset", help="preset name (pgolf presets) or TOML path: the base of every trial")
    p.add_argument("--space", type=Path, help="the search space: a TOML file of --set fields (docs/sweep.md)")
    p.add_argument("--trials", type=positive, help="finished trials the study should hold in all (every worker "
                                                    "stops there; a later run with a larger N continues the study)")
    p.add_argument("--data", type=Path, help="data directory (with manifest.json)")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="a fixed override of every trial (e.g. a short budget)")
    p.add_argument("--max-steps", type=positive, help="every trial stops after N steps (sets train.iterations)")
    p.add_argument("--max-seconds", type=number(float, 0.0, "a number of seconds >= 0 (0 = no limit)"),
                   help="every trial's wall-clock cap (sets train.max_wallclock_seconds)")
    p.add_argument("--study", help="study name (default PRESET-SPACE, from the two file names)")
    p.add_argument("--out", type=Path, help="the study's folder: trials/NNNN run directories, sweep.json, the default "
                                            "SQLite storage (default sweeps/STUDY)")
    p.add_argument("--storage", help="journal:PATH (a shared file system) or a database URL (postgresql://...); "
                                     "default sqlite in the study's folder")
    p.add_argument("--workers", type=positive, default=1,
                   help="trials at once in this process, each on its own GPU (or GPUs) or its own CPU cores")
    p.add_argument("--nproc-per-node", type=positive, default=1,
                   help="GPUs per trial: each trial runs under torchrun --nproc_per_node=G (default 1)")
    p.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="tpe (default) or random")
    p.add_argument("--startup-trials", type=positive, default=10,
                   help="TPE samples at random until the study has this many trials (default 10)")
    p.add_argument("--seed", type=int, help="the sampler's seed (one worker: a repeatable sequence of trials)")
    p.add_argument("--pruner", choices=PRUNERS, default="sha",
                   help="sha: successive halving (default), hyperband, median, or none")
    p.add_argument("--prune-from", type=number(float, 0.0, "a fraction in (0, 1)", below=1.0, strict=True),
                   default=0.2, help="the pruner's first decision, as a fraction of the training budget (default 0.2)")
    p.add_argument("--reduction-factor", type=number(int, 2, "an integer >= 2"), default=3,
                   help="sha/hyperband: keep the best 1/F at each rung (default 3)")
    p.add_argument("--objective", choices=OBJECTIVES, default="artifact",
                   help="artifact: val_bpb of the artifact file, the run's score (default); pre-quant: the last "
                        "periodic validation before quantization (a proxy)")
    p.add_argument("--heartbeat", type=number(float, 0.1, "seconds >= 0.1"), default=30.0,
                   help="seconds between a running trial's signs of life (default 30)")
    p.add_argument("--grace", type=number(float, 0.1, "seconds >= 0.1"),
                   help="a running trial silent this long is its dead worker's: failed and retried (default 4 x "
                        "--heartbeat)")
    p.set_defaults(func=_cmd_sweep, sweep_command=None)
    reports = p.add_subparsers(dest="sweep_command", metavar="{report}")
    r = reports.add_parser("report", help="best trials, parameter importances, figures, the best config as a preset")
    r.add_argument("study_dir", type=Path, metavar="STUDY_DIR", help="the study's folder (pgolf sweep --out)")
    r.add_argument("--storage", help="the study's storage (default: the one its sweep.json names)")
    r.add_argument("--study", dest="report_study", help="the study's name (default: its sweep.json's)")
    r.add_argument("--top", type=positive, default=10, help="trials in the table (default 10)")
    r.add_argument("--no-figures", action="store_true", help="no PNG figures")
