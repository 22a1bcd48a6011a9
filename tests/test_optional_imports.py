"""The GPU machine's image lacks brotli, zstandard, constriction and python-minifier (benchmarks/gpu_image.txt):
the model, the trainer, the evaluator, the options and `pgolf bench` must import without them, and the step that
needs one must say which package, in one line (issue 20)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LACKING = ("brotli", "zstandard", "constriction", "python_minifier")


def _run_without_codecs(body: str) -> subprocess.CompletedProcess:
    """`body` in a fresh interpreter where importing any of LACKING fails (None in sys.modules: ImportError)."""
    code = f"import sys\nsys.modules.update(dict.fromkeys({LACKING!r}))\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})


def test_training_and_scoring_modules_import_without_codec_packages():
    proc = _run_without_codecs("""
        import pgolf.cli, pgolf.options, pgolf.model.gpt, pgolf.train.trainer, pgolf.train.bench
        import pgolf.eval.evaluate, pgolf.eval.ttt, pgolf.artifact.format, pgolf.quant.fitter
        from pgolf.options import resolve_config
        resolve_config("record", [], environ={})  # the record's codec (ans2) is checked by name only
        print("imported")
    """)
    assert proc.returncode == 0 and "imported" in proc.stdout, proc.stderr[-2000:]


def test_a_missing_codec_package_is_one_line_naming_it():
    proc = _run_without_codecs("""
        from pgolf.artifact.codecs import compress, decompress
        from pgolf.errors import PgolfError
        assert decompress("zlib", compress("zlib", b"abc" * 100, 6)) == b"abc" * 100  # stdlib codecs still work
        import numpy as np
        from pgolf.artifact import rans
        values = (np.arange(100) % 7).astype(np.int8)
        attempts = {"brotli": lambda: compress("brotli", bytes(range(256)) * 64, 11),
                    "zstd": lambda: compress("zstd", bytes(range(256)) * 64, 3),
                    "ans2": lambda: rans.encode_symbols(values, rans.fit_model(*rans.histogram(values)))}
        for codec, package in (("brotli", "brotli"), ("zstd", "zstandard"), ("ans2", "constriction")):
            try:
                attempts[codec]()
            except PgolfError as exc:
                assert f"'{package}' package" in str(exc) and "\\n" not in str(exc), exc
                print(codec, "refused")
            else:
                raise AssertionError(codec)
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:3] == ["brotli refused", "zstd refused", "ans2 refused"], proc.stdout
