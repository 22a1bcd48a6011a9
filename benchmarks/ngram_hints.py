"""Causal n-gram hints (`pgolf.eval.ngram.ngram_hints`) at the record's val-stream length: seconds, peak RSS, and how
many positions the tilt would fire on; one JSON line.

    python benchmarks/ngram_hints.py                                # exact, 47,851,520 tokens, order 16, 1 thread
    python benchmarks/ngram_hints.py --hashed                       # PR #2135's XOR-hash keys
    python benchmarks/ngram_hints.py --cache /tmp/ngram_tokens.npy  # tokenize once, reuse the stream
    python benchmarks/ngram_hints.py --compare                      # also count where the two modes differ
    python benchmarks/ngram_hints.py --distinct 490163              # 490k real tokens repeated: the heaviest load
    python benchmarks/ngram_hints.py --device cuda

The stream is real text when ../shared/data is there (or $PGOLF_SHARED_DATA): FineWeb (challenge docs first, then
FineWeb-Edu and the legal-keyword sample), then Wikipedia, CaseOps-transformed and encoded with the SP8192 CaseOps
tokenizer (BOS before each document), repeated end to end if it is shorter than `--tokens`. Without the folder it
is a synthetic Zipf stream (mostly unseen contexts, so a light load). The JSON says which, and how many times the
real text was repeated (every repeat makes its contexts seen: the heaviest load, which `--distinct` forces).

Measured on one core of the shared 2-core dev machine (other jobs running, so +-15%), 47,851,520 real tokens, order
16: exact 5.2 s, 2.5 GiB peak RSS, 741,136 positions seen, 688,091 with share >= 0.8; hashed 12.0 s, 3.5 GiB,
811,940 seen, 757,872 >= 0.8; the modes differ at 72,038 positions. With `--distinct 490163` (99% of contexts seen):
exact 22-25 s, 4.4 GiB; hashed 26-31 s, 4.7 GiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from pgolf.eval.ngram import ngram_hints

_SOURCES = ("fineweb/challenge_docs_200.jsonl", "fineweb/fineweb_edu_10BT_150.jsonl",
            "fineweb/fineweb_10BT_legal_2800.jsonl", *(f"wikipedia/enwiki_2015_part0{i}.jsonl" for i in range(4)))
_TOKENIZER = "tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"
_BATCH_DOCS = 256


def _shared_data() -> Path | None:
    env = os.environ.get("PGOLF_SHARED_DATA")
    path = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    return path if path.is_dir() else None


def real_stream(data: Path, n: int) -> np.ndarray:
    """The first n tokens of the shared real text (fewer if it runs out)."""
    from pgolf.data.caseops import encode_caseops
    from pgolf.data.corpus import iter_documents
    from pgolf.data.tokenizer import encode_documents, load_tokenizer

    sp = load_tokenizer(data / _TOKENIZER)
    parts, have, batch = [], 0, []
    for name in _SOURCES:
        for doc in iter_documents(data / name):
            batch.append(encode_caseops(doc))
            if len(batch) == _BATCH_DOCS:
                parts += encode_documents(sp, batch, workers=os.cpu_count() or 1)
                have += sum(p.size for p in parts[-len(batch):])
                batch = []
                if have >= n:
                    return np.concatenate(parts)[:n]
    parts += encode_documents(sp, batch, workers=os.cpu_count() or 1)
    return np.concatenate(parts)[:n]


def zipf_stream(n: int, vocab: int = 8192, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.minimum(rng.zipf(1.1, n), vocab) - 1).astype(np.uint16)


def build_stream(n: int, cache: str | None, distinct: int = 0) -> tuple[np.ndarray, str]:
    want = min(n, distinct) if distinct else n
    stream = source = None
    if cache and Path(cache).is_file():
        stream, source = np.load(cache), f"cached {cache}"
    if stream is None or stream.size < want:
        data = _shared_data()
        if data is None:
            return zipf_stream(n), "synthetic zipf(1.1), vocab 8192"
        stream, source = real_stream(data, want), f"real text from {data} (sp8192 caseops)"
        if cache:
            np.save(cache, stream)
    stream = stream[:want]
    source += f", {stream.size:,} tokens of it"
    if stream.size < n:
        reps = -(-n // stream.size)
        source += f", repeated {reps}x"
        stream = np.tile(stream, reps)[:n]
    return stream, source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=47_851_520)
    ap.add_argument("--order", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--hashed", action="store_true", help="PR #2135's XOR-hash keys instead of exact contexts")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs; the best is reported")
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--cache", default=None, help=".npy file to load the real tokens from, or to save them to")
    ap.add_argument("--distinct", type=int, default=0, help="use only this many real tokens, repeated")
    ap.add_argument("--compare", action="store_true", help="also run the other keying (untimed) and count differences")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    stream, source = build_stream(args.tokens, args.cache, args.distinct)
    build_s = time.perf_counter() - t0
    tokens = torch.from_numpy(stream.astype(np.int64)).to(args.device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    best, hints = float("inf"), None
    for _ in range(args.repeat):
        hints = None  # not alive during the next run: peak RSS is one run's
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        hints = ngram_hints(tokens, args.order, hashed=args.hashed)
        if args.device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    out = {
        "tokens": int(stream.size), "order": args.order, "hashed": args.hashed, "device": args.device,
        "threads": torch.get_num_threads(), "seconds": round(best, 2), "stream": source,
        "stream_build_s": round(build_s, 1), "seen": hints.seen,
        "confident": int(hints.confident(args.threshold).sum()), "threshold": args.threshold,
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "peak_rss_before_gib": round(rss_before, 2),
    }
    if args.compare:
        other = ngram_hints(tokens, args.order, hashed=not args.hashed)
        out["other"] = {"hashed": not args.hashed, "seen": other.seen,
                        "confident": int(other.confident(args.threshold).sum())}
        out["positions_differ"] = int(((hints.token != other.token) | (hints.share != other.share)).sum())
        out["confident_differ"] = int((hints.confident(args.threshold) != other.confident(args.threshold)).sum())
    if args.device == "cuda":
        out["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
