"""Cost of the train/val overlap check (`pgolf.data.overlap`, docs/data.md#trainval-overlap) at the official scale:
time and peak memory for a val split of 50,000 documents (~47.85M tokens) against train shards of 10^8 tokens.

Writes synthetic shards to a temporary folder (about 0.2 GB per shard plus 0.1 GB of val; deleted afterwards unless
--keep), then measures in fresh child processes, so that generating the data does not count in their memory:
the val index alone, each train shard alone (its cost: the comparison's time less its val indexing,
`Overlap.index_seconds`), and the whole stream at once (peak memory: the val split plus one shard), each the
fastest of --repeat runs. 80 shards (the official download) are an extrapolation: val index + 80 x the mean
clean-shard time. Documents: lognormal lengths (mean ~950 tokens, long tail), tokens Zipf-distributed over an
8192-id vocabulary, BOS first, documents straddling shards; `--leak N` val documents are copied into the first
train shard (the #2127 case: 40,000 of 50,000), so the hit path is timed too.

    python benchmarks/overlap_check.py                       # 3 shards, 40,000 leaked val documents
    python benchmarks/overlap_check.py --shards 2 --leak 0 --tmp /data/tmp

The shards are read from the page cache (just written); a cold disk adds its read time (200 MB per shard).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BOS = 1
VOCAB = 8192
MEAN_LEN = 950


def _lengths(rng: np.random.Generator, n: int, mean: float = MEAN_LEN, sigma: float = 1.0) -> np.ndarray:
    """Document lengths (tokens after BOS): lognormal with the given mean, at least 1."""
    mu = np.log(mean) - sigma ** 2 / 2
    return np.maximum(1, rng.lognormal(mu, sigma, size=n)).astype(np.int64)


def _tokens(rng: np.random.Generator, n: int, cdf: np.ndarray) -> np.ndarray:
    return (np.searchsorted(cdf, rng.random(n)) + 2).astype(np.uint16)  # ids 2.. (0, 1: pad, BOS)


def _stream(rng: np.random.Generator, lengths: np.ndarray, cdf: np.ndarray) -> np.ndarray:
    out = _tokens(rng, int(lengths.sum()) + len(lengths), cdf)
    out[np.concatenate([[0], np.cumsum(lengths + 1)[:-1]])] = BOS
    return out


def generate(folder: Path, shards: int, shard_tokens: int, val_docs: int, val_tokens: int, leak: int,
             seed: int) -> dict:
    """Write fineweb_val_000000.bin and `shards` train shards; returns what was written."""
    from pgolf.data.shards import write_shard

    rng = np.random.default_rng(seed)
    ranks = np.arange(1, VOCAB - 1, dtype=np.float64)
    cdf = np.cumsum(1.0 / ranks ** 1.1)
    cdf /= cdf[-1]
    val_lengths = _lengths(rng, val_docs)
    if val_tokens:  # scale to the official total (BOS included)
        val_lengths = np.maximum(1, np.round(val_lengths * ((val_tokens - val_docs) / val_lengths.sum())))
        val_lengths = val_lengths.astype(np.int64)
    val = _stream(rng, val_lengths, cdf)
    write_shard(folder / "fineweb_val_000000.bin", val)
    starts = np.concatenate([[0], np.cumsum(val_lengths + 1)[:-1]])
    leaked = np.sort(rng.choice(val_docs, size=leak, replace=False)) if leak else np.zeros(0, dtype=np.int64)
    planted = [val[starts[i]:starts[i] + val_lengths[i] + 1] for i in leaked]
    carry = np.concatenate(planted) if planted else np.zeros(0, dtype=np.uint16)
    written = 0
    for k in range(shards):
        need = shard_tokens - len(carry)
        lengths = _lengths(rng, int(need / (MEAN_LEN + 1) * 1.1) + 10)
        fresh = _stream(rng, lengths, cdf)
        block = np.concatenate([carry, fresh])
        write_shard(folder / f"fineweb_train_{k:06d}.bin", block[:shard_tokens])
        carry = block[shard_tokens:]  # the rest continues in the next shard: documents straddle shards
        written += shard_tokens
    return {"val_docs": val_docs, "val_tokens": int(len(val)), "train_shards": shards, "train_tokens": written,
            "leaked_val_docs": leak}


def _child(args: list[str], repeat: int) -> dict:
    """The fastest of `repeat` runs in fresh processes (the CPU is shared: the minimum is the least disturbed)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, __file__, "--child", *args], check=True, capture_output=True,
                             text=True, env=env)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["seconds"])
    return {**best, "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
            "all_seconds": [round(r["seconds"], 3) for r in runs],
            "all_scan_seconds": [round(r["scan_seconds"], 3) for r in runs]}


def child(mode: str, folder: Path, shard: int) -> None:
    """One measurement in a fresh process: prints time, the overlap found and this process's peak RSS."""
    from pgolf.data.overlap import compare_splits

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core
    base_rss = _peak_rss_mib()
    val = [folder / "fineweb_val_000000.bin"]
    train = sorted(folder.glob("fineweb_train_*.bin"))
    files = {"val": [], "shard": [train[shard]] if mode == "shard" else [], "all": train}[mode]
    start = time.perf_counter()
    r = compare_splits(files, [val], BOS)[0]
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "index_seconds": r.index_seconds, "scan_seconds": seconds - r.index_seconds,
                      "overlapping_docs": r.overlapping_docs, "train_docs": r.train_docs, "val_docs": r.val_docs,
                      "val_docs_in_train": r.val_docs_in_train, "peak_rss_mib": _peak_rss_mib(),
                      "import_rss_mib": base_rss}))


def _peak_rss_mib() -> float:
    """This process's peak resident memory: VmHWM (Linux; ru_maxrss would include the parent's memory at fork),
    else ru_maxrss. Pages of the memory-mapped shards count while mapped."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=3, help="train shards to generate and time (default 3)")
    ap.add_argument("--shard-tokens", type=int, default=10**8, help="tokens per train shard (official: 10^8)")
    ap.add_argument("--val-docs", type=int, default=50_000, help="val documents (official: 50,000)")
    ap.add_argument("--val-tokens", type=int, default=47_850_000,
                    help="val tokens, BOS included (official sp8192: ~47.85M; 0: as drawn)")
    ap.add_argument("--leak", type=int, default=40_000, help="val documents copied into the first train shard")
    ap.add_argument("--extrapolate", type=int, default=80, help="shards to extrapolate to (official default 80)")
    ap.add_argument("--tmp", type=Path, default=None, help="where to write the shards (default: the system's)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each measurement; the fastest is reported")
    ap.add_argument("--keep", action="store_true", help="keep the generated shards")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), int(args.child[2]))
        return
    need = (args.shards * args.shard_tokens * 2 + args.val_docs * (MEAN_LEN + 1) * 2) * 1.05
    tmp_root = args.tmp or Path(tempfile.gettempdir())
    free = shutil.disk_usage(tmp_root).free
    if need > free * 0.8:
        sys.exit(f"overlap_check: needs about {need / 1e9:.1f} GB in {tmp_root}, {free / 1e9:.1f} GB free")
    folder = Path(tempfile.mkdtemp(prefix="pgolf-overlap-", dir=tmp_root))
    try:
        t = time.perf_counter()
        data = generate(folder, args.shards, args.shard_tokens, args.val_docs, args.val_tokens, args.leak,
                        args.seed)
        print(f"generated {data} in {time.perf_counter() - t:.0f} s under {folder}", file=sys.stderr)
        val = _child(["val", str(folder), "0"], args.repeat)
        shards = [_child(["shard", str(folder), str(k)], args.repeat) for k in range(args.shards)]
        whole = _child(["all", str(folder), "0"], args.repeat)
        per_shard = [min(s["all_scan_seconds"]) for s in shards]
        clean = per_shard[1:] if args.leak and len(per_shard) > 1 else per_shard
        mean_clean = sum(clean) / len(clean)
        result = {
            "data": data,
            "val_index_s": round(val["seconds"], 3),
            "per_shard_s": [round(s, 3) for s in per_shard],
            "shard_hits": [s["overlapping_docs"] for s in shards],
            "mean_clean_shard_s": round(mean_clean, 3),
            "whole_stream_s": round(whole["seconds"], 3),
            "runs_s": {"val_index": val["all_seconds"], "shard_scans": [s["all_scan_seconds"] for s in shards],
                       "whole_stream": whole["all_seconds"]},
            "whole_stream_overlap": {k: whole[k] for k in ("overlapping_docs", "val_docs_in_train", "train_docs")},
            "peak_rss_mib": {"import_only": round(val["import_rss_mib"]), "val_index": round(val["peak_rss_mib"]),
                             "one_shard": round(max(s["peak_rss_mib"] for s in shards)),
                             "whole_stream": round(whole["peak_rss_mib"])},
            f"extrapolated_{args.extrapolate}_shards_s": round(val["seconds"] + args.extrapolate * mean_clean, 1),
            "python": platform.python_version(), "numpy": np.__version__,
        }
        print(json.dumps(result, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
