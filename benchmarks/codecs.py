"""Payload codecs on one artifact: compressed bytes, ratio and speed of every codec, against the order-0 bound.

Loads an artifact, rebuilds its uncompressed payload and layout (exactly what the container hands a codec), runs
every registered codec (or `--codecs`) at its strongest level, checks each round-trip, and prints markdown tables:

    python benchmarks/codecs.py local/runs/baseline-cpu-5min/artifact.pgolf
    python benchmarks/codecs.py ARTIFACT.pgolf --codecs brotli,ans

The bound is what any order-0 coder of the integer streams needs at least: sum over `ans` streams (one per tensor
group) of n * H(histogram), plus the non-integer side bytes exactly as `ans` stores them (byte-shuffled, brotli).
Context models (`ans` column classes, `ans2`) can go below it; their per-stream bytes are listed beside it.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from pgolf.artifact.ans_container import split_payload
from pgolf.artifact.codecs import CODECS, compress, decompress
from pgolf.artifact.format import load_artifact, payload_layout
from pgolf.artifact.rans import encode_symbols, entropy_bits, fit_model, histogram, model_bytes
from pgolf.errors import PgolfError

# Strongest level of each codec (the records' settings: zlib-9, lzma-9, zstd-22, brotli-11).
BEST_LEVEL = {"none": 0, "zlib": 9, "lzma": 9, "zstd": 22, "brotli": 11, "bshf-brotli": 11, "ans": 11, "ans2": 11}


def _payload(path: str) -> tuple[bytes, list]:
    art = load_artifact(path)
    payload = b"".join(np.require(a, requirements="C").tobytes() for qt in art.quantized for a in qt.arrays.values())
    if len(payload) != art.header["payload_bytes"]:
        raise PgolfError(f"{path}: rebuilt payload is {len(payload):,} bytes, the header says "
                         f"{art.header['payload_bytes']:,}")
    return payload, payload_layout(art.header["tensors"])


def _codec_rows(payload: bytes, layout: list, names: list[str]) -> list[str]:
    rows = ["| codec | level | bytes | ratio vs raw | compress s | decompress s |", "|---|---:|---:|---:|---:|---:|"]
    for name in names:
        level = BEST_LEVEL.get(name, 9)
        t0 = time.perf_counter()
        blob = compress(name, payload, level, layout)
        t1 = time.perf_counter()
        back = decompress(name, blob, layout)
        t2 = time.perf_counter()
        if back != payload:
            raise PgolfError(f"codec {name} did not round-trip")
        rows.append(f"| {name} | {level} | {len(blob):,} | {len(blob) / max(1, len(payload)):.4f} | {t1 - t0:.2f} | "
                    f"{t2 - t1:.2f} |")
    return rows


def _bound_rows(payload: bytes, layout: list) -> list[str]:
    from pgolf.artifact.ans_container import _code_stream, _code_stream2, symbol_streams
    from pgolf.artifact.codecs import layout_pieces

    streams, side = split_payload(payload, layout)
    members_of = symbol_streams(list(layout_pieces(len(payload), layout)))
    rows = ["| stream (group, scheme, key) | symbols | distinct | bits/symbol (H) | order-0 bound bytes | one-model "
            "rANS bytes (table + coded) | over bound | ans with column classes | vs bound | ans2 (context model) | "
            "vs bound |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    bound_total = coded_total = classed_total = context_total = 0.0
    for (group, scheme, key, dtype), values in streams.items():
        if values.size == 0:
            continue
        low, counts = histogram(values)
        bound = entropy_bits(counts) / 8
        model = fit_model(low, counts)
        coded = len(model_bytes(model)) + len(encode_symbols(values, model))
        head, parts = bytearray(), []
        _code_stream(values, members_of[(group, scheme, key, dtype)], head, parts)
        classed = len(head) + sum(len(p) for p in parts)
        head, parts = bytearray(), []
        _code_stream2(values, members_of[(group, scheme, key, dtype)], head, parts)
        context = len(head) + sum(len(p) for p in parts)
        bound_total += bound
        coded_total += coded
        classed_total += classed
        context_total += context
        rows.append(f"| {group}, {scheme}, {key} | {values.size:,} | {int((counts > 0).sum())} | "
                    f"{8 * bound / values.size:.4f} | {bound:,.0f} | {coded:,} | {coded / bound - 1:+.3%} | "
                    f"{classed:,} | {classed / bound - 1:+.3%} | {context:,} | {context / bound - 1:+.3%} |")
    side_brotli = len(compress("brotli", side, 11)) if side else 0
    n = sum(v.size for v in streams.values())
    rows.append(f"| **integer streams** | {n:,} | | {8 * bound_total / max(1, n):.4f} | {bound_total:,.0f} | "
                f"{coded_total:,.0f} | {coded_total / max(bound_total, 1e-9) - 1:+.3%} | {classed_total:,.0f} | "
                f"{classed_total / max(bound_total, 1e-9) - 1:+.3%} | {context_total:,.0f} | "
                f"{context_total / max(bound_total, 1e-9) - 1:+.3%} |")
    rows.append(f"| **non-integer bytes** (byte-shuffled, brotli-11) | {len(side):,} bytes | | | | {side_brotli:,} | |")
    rows.append(f"| **bound + non-integer** | | | | {bound_total + side_brotli:,.0f} | | |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--codecs", default=",".join(CODECS), help="comma-separated codec names (default: all)")
    args = ap.parse_args()
    try:
        names = [n for n in args.codecs.split(",") if n]
        for name in names:
            if name not in CODECS:
                raise PgolfError(f"unknown codec {name!r} (known: {', '.join(CODECS)})")
        payload, layout = _payload(args.artifact)
        print(f"{args.artifact}: payload {len(payload):,} bytes in {len(layout)} arrays\n")
        print("\n".join(_codec_rows(payload, layout, names)))
        print()
        print("\n".join(_bound_rows(payload, layout)))
    except PgolfError as exc:
        print(f"codecs: error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
