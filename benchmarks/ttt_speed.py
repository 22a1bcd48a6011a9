"""Scoring speed of the TTT modes against `flat` on one artifact, and the wall time of a TTT legality check.

Scores the first `--max-tokens` val tokens with each mode (`pgolf.eval.evaluate.score_artifact`, the path of
`pgolf eval`), `--repeats` times in turn, and prints a markdown table of the best and median scoring seconds,
tokens/s, the ratio to `flat`, the least CPU seconds of a run (scoring and loading; less sensitive than wall time
to other jobs on a shared machine) and the exact val_bpb of every mode (every distinct value, if the repeats
differ):

    python benchmarks/ttt_speed.py ARTIFACT.pgolf --data DIR --max-tokens 8192 --repeats 3
    python benchmarks/ttt_speed.py ARTIFACT.pgolf --data DIR --legality lora-ttt --legality-tokens 4096

`--set ttt.FIELD=VALUE` applies to every mode; `--phased-set` and `--sgd-set` only to `phased-ttt` and `sgd-ttt`
(so that on a few thousand tokens the phases and the SGD chunks run at all: by default `phased-ttt` needs more
documents than `ttt.batch_docs` and `sgd-ttt` more than `ttt.chunk_tokens` targets). To compare code versions,
run the same command with `PYTHONPATH=OTHER/src` in the same sitting.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import time

import torch

MODES = ("flat", "lora-ttt", "phased-ttt", "sgd-ttt")


def _score(artifact: str, data: str, mode: str, max_tokens: int, overrides: list[str]) -> tuple[float, float, float]:
    """(scoring seconds, CPU seconds of the whole call, val_bpb) of one `pgolf eval`-equivalent run."""
    from pgolf.eval.evaluate import score_artifact

    cpu = time.process_time()
    with contextlib.redirect_stderr(io.StringIO()):  # no-op warnings of tiny setups are expected here
        out = score_artifact(artifact, data, mode=mode, max_tokens=max_tokens, overrides=overrides,
                             enforce_cap=False)
    return float(out["phases"]["scoring"]), time.process_time() - cpu, float(out["val_bpb"])


def speed_table(args: argparse.Namespace) -> str:
    extra = {"phased-ttt": args.phased_set, "sgd-ttt": args.sgd_set}
    _score(args.artifact, args.data, "flat", 1024, [])  # imports and first-call set-up, not timed
    seconds: dict[str, list[float]] = {m: [] for m in args.modes}
    cpu: dict[str, list[float]] = {m: [] for m in args.modes}
    bpb: dict[str, list[float]] = {}  # several values: summation order changed between runs (threads)
    for _ in range(args.repeats):  # modes interleaved, so a load change on a shared machine hits them all
        for mode in args.modes:
            s, c, b = _score(args.artifact, args.data, mode, args.max_tokens, [*args.set, *extra.get(mode, [])])
            bpb.setdefault(mode, [])
            if b not in bpb[mode]:
                bpb[mode].append(b)
            seconds[mode].append(s)
            cpu[mode].append(c)
    targets = args.max_tokens - 1
    flat = min(seconds["flat"]) if "flat" in seconds else None
    rows = ["| mode | best s | median s | CPU s (best) | tokens/s (best) | x flat | val_bpb |",
            "|---|---:|---:|---:|---:|---:|---|"]
    for mode in args.modes:
        best = min(seconds[mode])
        ratio = f"{best / flat:.1f}" if flat else "-"
        rows.append(f"| `{mode}` | {best:.2f} | {statistics.median(seconds[mode]):.2f} | {min(cpu[mode]):.2f} | "
                    f"{targets / best:,.0f} | {ratio} | {' / '.join(repr(b) for b in bpb[mode])} |")
    return "\n".join(rows)


def legality_time(args: argparse.Namespace) -> str:
    from pgolf.eval.legality import check_artifact

    start, cpu = time.perf_counter(), time.process_time()
    report = check_artifact(args.artifact, args.data, mode=args.legality, tokens=args.legality_tokens)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return (f"{report.table()}\nlegality {args.legality} --tokens {args.legality_tokens}: {seconds:.1f} s wall, "
            f"{cpu:.1f} s CPU")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact")
    p.add_argument("--data", required=True)
    p.add_argument("--max-tokens", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--set", action="append", default=[], help="ttt.FIELD=VALUE or eval.FIELD=VALUE, every mode")
    p.add_argument("--phased-set", action="append", default=[], help="an override for phased-ttt only")
    p.add_argument("--sgd-set", action="append", default=[], help="an override for sgd-ttt only")
    p.add_argument("--legality", default="", help="also time `pgolf legality --mode MODE` (empty: skip the table)")
    p.add_argument("--legality-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.max_tokens} val tokens, "
          f"{args.repeats} repeats")
    if args.repeats > 0:
        print(speed_table(args))
    if args.legality:
        print(legality_time(args))


if __name__ == "__main__":
    main()
