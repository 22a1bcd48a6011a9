"""The `pgolf data` commands (demo, build, fineweb, import, verify): documents or a hosted export become a data
directory, and a data directory is checked against its manifest (docs/data.md documents every command).

They register on the CLI from here (`add_commands`), as the submission commands do from `pgolf/submit/commands.py`,
so `pgolf/cli.py` keeps one line for all of them and imports this module inside `build_parser` only: the
`train_gpt.py` bundle follows the imports of `pgolf.cli.train_main` and so never carries these commands. The
subparsers inherit `pgolf.cli`'s parser class, so a bad command line is one `pgolf: error:` line and exit 2, like a
`PgolfError` raised here; an output folder inside a file fails as the operating system says, in one line too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pgolf.cli_args import count, positive
from pgolf.errors import PgolfError

DEMO_DATA = Path("data/demo")  # `data demo --out` and `pgolf run --data` by default


def _not_a_file(out: Path) -> Path:
    """`--out`, unless it is a file (it is to become a directory)."""
    if out.exists() and not out.is_dir():
        raise PgolfError(f"data: --out {out} is a file, not a directory")
    return out


def _new_data_dir(out: Path, overwrite: bool) -> Path:
    """`--out` for a data build: refused when it already holds a data directory (another job may be reading it)
    unless --overwrite."""
    if _not_a_file(out).is_dir() and any(out.iterdir()) and not overwrite:
        raise PgolfError(f"data: {out} is not empty (a data directory another run may be reading); pass --overwrite "
                         "to rebuild it in place, or choose another --out")
    return out


def _cmd_data_demo(args: argparse.Namespace) -> int:
    from pgolf.data.build import build_demo

    manifest = build_demo(_new_data_dir(args.out, args.overwrite), vocab_size=args.vocab_size, progress=not args.quiet)
    _print_manifest(args.out, manifest)
    return 0


def _cmd_data_build(args: argparse.Namespace) -> int:
    from pgolf.data.build import build_dataset
    from pgolf.data.overlap import print_overlap

    if (args.tokenizer is None) == (args.vocab_size is None):
        raise PgolfError("data build: give exactly one of --tokenizer MODEL or --vocab-size N")
    manifest = build_dataset(args.docs, _new_data_dir(args.out, args.overwrite), tokenizer=args.tokenizer,
                             vocab_size=args.vocab_size, val_docs=args.val_docs,
                             workers=args.workers or os.cpu_count() or 1, shard_size=args.shard_size,
                             progress=not args.quiet, caseops=args.caseops, refuse_overlap=not args.allow_overlap)
    _print_manifest(args.out, manifest)
    print_overlap(manifest, args.out)
    return 0


def _cmd_data_fineweb(args: argparse.Namespace) -> int:
    from pgolf.data.hub import download_fineweb
    from pgolf.data.overlap import print_overlap

    result = download_fineweb(_not_a_file(args.out), variant=args.variant,
                              train_shards=args.train_shards, repo_id=args.repo_id, remote_root=args.remote_root,
                              with_docs=args.with_docs, progress=not args.quiet, hub_dir=args.hub_dir)
    print(f"downloaded {len(result.files)} files ({result.skipped} already present)")
    _print_manifest(result.dataset_dir, result.manifest)
    print_overlap(result.manifest, result.dataset_dir)
    return 0


def _cmd_data_import(args: argparse.Namespace) -> int:
    from pgolf.data.importer import import_data_dir
    from pgolf.data.overlap import print_overlap

    manifest = import_data_dir(args.dir, tokenizer=args.tokenizer, progress=not args.quiet)
    _print_manifest(args.dir, manifest)
    print_overlap(manifest, args.dir)
    return 0


def _cmd_data_verify(args: argparse.Namespace) -> int:
    """Every file of a data directory against its manifest, SHA-256 included: one `pgolf: error:` line per bad
    file and exit code 2, or a summary and 0 (docs/data.md#checksums). Then its train documents against its val
    documents (and, with --against, another directory's): a train document equal to a val document is one
    `pgolf: error:` line and exit code 2 (docs/data.md#trainval-overlap)."""
    from pgolf.data.manifest import CHECKSUMS, add_checksums, read_manifest, verify_data_dir
    from pgolf.data.overlap import check_overlaps, leak_fingerprint

    if args.against is not None:
        read_manifest(args.against)  # a wrong --against is one line before the slow part
    report = verify_data_dir(args.dir, progress=not args.quiet)
    for problem in report.problems:
        print(f"pgolf: error: {problem}", file=sys.stderr)
    if report.problems:
        print(f"verify: {args.dir}: {len(report.problems)} problem(s); train on it only after rebuilding or "
              "re-downloading the files named above")
        return 2
    rate = report.bytes / report.seconds / 1e6 if report.seconds > 0 else 0.0
    if report.checksums:
        print(f"verify: {args.dir}: {report.files} file(s), {report.bytes:,} bytes match the manifest's SHA-256 "
              f"({report.seconds:.1f} s, {rate:.0f} MB/s)")
    elif args.add_checksums:
        manifest = add_checksums(args.dir)
        print(f"verify: {args.dir}: headers, sizes and token counts are whole; recorded the SHA-256 of "
              f"{len(manifest[CHECKSUMS])} file(s) in {Path(args.dir) / 'manifest.json'}")
    else:
        print(f"pgolf: note: {Path(args.dir) / 'manifest.json'} has no shard checksums (written by an older pgolf): "
              f"checked headers, sizes and token counts only; record them with: pgolf data verify {args.dir} "
              "--add-checksums", file=sys.stderr)
        print(f"verify: {args.dir}: {report.files} file(s), {report.bytes:,} bytes: headers, sizes and token counts "
              "are whole (no checksums to compare)")
    results = check_overlaps(args.dir, args.against, progress=not args.quiet)
    for result in results:
        print(result.summary(args.dir))
    warning = leak_fingerprint(read_manifest(args.dir), args.dir)
    if warning:
        print(f"pgolf: warning: {warning}", file=sys.stderr)
    leaks = [line for line in (r.problem(args.dir) for r in results) if line]
    for line in leaks:
        print(f"pgolf: error: {line}", file=sys.stderr)
    return 2 if leaks else 0


def _print_manifest(out: str | Path, manifest: dict) -> None:
    tok = manifest["tokenizer"]
    print(f"data: {out} (tokenizer {tok['file']}, vocab {tok['vocab_size']})")
    for split in ("train", "val"):
        s = manifest["splits"][split]
        print(f"  {split}: {s['docs']} docs, {s['tokens']} tokens, {s['bytes']} bytes, {len(s['files'])} shard(s)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register `pgolf data` and its subcommands on the CLI's subparsers."""
    data = sub.add_parser("data", help="prepare challenge-format data").add_subparsers(dest="data_command",
                                                                                       required=True)
    p = data.add_parser("demo", help="offline English corpus (Python's own docs) -> tokenizer + shards + manifest")
    p.add_argument("--out", type=Path, default=DEMO_DATA, help=f"data directory (default {DEMO_DATA})")
    p.add_argument("--vocab-size", type=positive, default=1024, help="tokenizer vocabulary (default 1024)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true", help="rebuild a non-empty --out in place")
    p.set_defaults(func=_cmd_data_demo)

    p = data.add_parser("build", help="documents -> tokenizer + shards + manifest")
    p.add_argument("--docs", type=Path, action="append", required=True, help=".jsonl[.gz|.xz], .txt or .parquet")
    p.add_argument("--out", type=Path, required=True, help="the data directory to write (new or empty)")
    p.add_argument("--tokenizer", type=Path, help="an existing SentencePiece .model")
    p.add_argument("--vocab-size", type=positive, help="train a tokenizer with the official settings")
    p.add_argument("--val-docs", type=positive,
                   help="the first N documents are the val split (default 50,000, the official split)")
    p.add_argument("--workers", type=positive, help="tokenizer processes (default: all cores)")
    p.add_argument("--shard-size", type=positive, default=10**8, help="tokens per shard (official: 10^8)")
    p.add_argument("--caseops", action="store_true",
                   help="CaseOps: tokenize case-folded text with operator symbols, write the val byte sidecar")
    p.add_argument("--allow-overlap", action="store_true",
                   help="build even when train documents equal val documents (refused by default: a val leak)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--overwrite", action="store_true", help="rebuild a non-empty --out in place")
    p.set_defaults(func=_cmd_data_build)

    p = data.add_parser("fineweb", help="download a hosted export from the Hugging Face Hub (+ manifest)")
    p.add_argument("--variant", default="sp1024", metavar="{sp1024,sp4096,sp8192,sp8192-caseops}",
                   help="a hosted export (each has its own repository; default sp1024), or another variant in the "
                        "manifest of --repo-id")
    p.add_argument("--train-shards", type=count, default=80,
                   help="train shards to download, 10^8 tokens each (default 80, the official 8B tokens)")
    p.add_argument("--out", type=Path, default=Path("data"),
                   help="folder to download into, laid out as the repository (default data)")
    p.add_argument("--repo-id", help="dataset repository (default: the variant's; willdepueoai/parameter-golf "
                                     "for others)")
    p.add_argument("--remote-root", help="the export's folder in the repository (default: datasets)")
    p.add_argument("--with-docs", action="store_true", help="also fetch docs_selected.jsonl and its sidecar")
    p.add_argument("--hub-dir", type=Path, help="a local mirror of the hub repository instead of the network")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_data_fineweb)

    p = data.add_parser("import", help="adopt an official data folder: check its shards, write manifest.json")
    p.add_argument("dir", type=Path, help="a folder of fineweb_{train,val}_NNNNNN.bin shards")
    p.add_argument("--tokenizer", type=Path,
                   help="its SentencePiece .model (default: the one beside the shards, or ../../tokenizers/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_data_import)

    p = data.add_parser("verify", help="check every shard of a data directory against its manifest (full SHA-256)")
    p.add_argument("dir", type=Path, help="a data directory (with manifest.json)")
    p.add_argument("--add-checksums", action="store_true",
                   help="a manifest without checksums (older pgolf): record the files' SHA-256 as they are now")
    p.add_argument("--against", type=Path, metavar="OFFICIAL_DIR",
                   help="also compare the train documents with the val split of this data directory (e.g. the "
                        "official export, same tokenizer): what finds val documents built into train (issue #2127)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_data_verify)
