"""Disk full and unwritable outputs (issue 15): one clear line, a non-zero exit, nothing half-written left looking whole.

Two ways to fill the disk without root or a small tmpfs:

* `file_size_limit(n)` lowers this process's RLIMIT_FSIZE (and ignores SIGXFSZ), so the kernel itself refuses any
  write that would grow a file past `n` bytes (EFBIG), whatever Python or C code does the writing;
* `enospc_after(module, n)` gives one module an `open` whose files raise OSError(ENOSPC) once `n` bytes are written.

An unwritable output directory is a path below a regular file (root ignores permission bits, a file in the way stops
everyone).
"""

from __future__ import annotations

import errno
import io
import json
import resource
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from pgolf import cli, fileio
from pgolf.artifact.format import load_artifact, save_artifact
from pgolf.data import shards
from pgolf.data.manifest import MANIFEST
from pgolf.errors import PgolfError
from pgolf.quant.schemes import quantize_state_dict


@contextmanager
def file_size_limit(nbytes: int):
    """No file may grow past `nbytes` while inside (writes fail with EFBIG, like a full disk)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    before = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, before)


class _FullDisk(io.RawIOBase):
    """A writable file that accepts `room` bytes in all (shared budget), then raises ENOSPC."""

    def __init__(self, real, budget: list[int]):
        self.real, self.budget = real, budget

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        if len(data) > self.budget[0]:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget[0] -= len(data)
        return self.real.write(data)

    def close(self) -> None:
        self.real.close()
        super().close()


@contextmanager
def enospc_after(monkeypatch, module, nbytes: int):
    budget = [nbytes]
    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return _FullDisk(f, budget) if "w" in mode or "a" in mode else f

    monkeypatch.setattr(module, "open", fake_open, raising=False)
    yield
    monkeypatch.undo()


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    code = cli.main(argv)
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pgolf: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def leftovers(folder: Path) -> list[str]:
    """Temporary files (fileio's `.NAME.*.tmp`) anywhere below `folder`."""
    return sorted(p.name for p in folder.rglob("*.tmp"))


# ------------------------------------------------------------------------------------------------------- data build

@pytest.fixture(scope="module")
def docs_and_tokenizer(tmp_path_factory) -> tuple[Path, Path]:
    from pgolf.data.corpus import demo_documents
    from pgolf.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("docs")
    docs = [d for d in demo_documents() if len(d) > 200][:120]
    src = root / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    tok = root / "tok.model"
    train_tokenizer(docs[:60], 512, tok)
    return src, tok


def _build_argv(src: Path, tok: Path, out: Path) -> list[str]:
    return ["data", "build", "--docs", str(src), "--out", str(out), "--tokenizer", str(tok), "--val-docs", "10",
            "--shard-size", "20000", "--workers", "1", "--quiet"]


def test_data_build_disk_full_while_writing_shards(tmp_path, capsys, monkeypatch, docs_and_tokenizer):
    src, tok = docs_and_tokenizer
    out = tmp_path / "out"
    assert cli.main(_build_argv(src, tok, tmp_path / "whole")) == 0  # the same build fits on a disk with room
    capsys.readouterr()
    whole = sorted(p.name for p in (tmp_path / "whole").glob("fineweb_*.bin"))
    assert len(whole) >= 3
    with enospc_after(monkeypatch, shards, 2 * (shards.HEADER_BYTES + 40_000) + 5000):  # two shards, part of a third
        code, err = run_cli(capsys, _build_argv(src, tok, out))
    assert_one_line_error(code, err, "No space left on device", "fineweb_")
    assert not out.exists()  # the build created the directory, so a failed build removes it: nothing half-written
    with pytest.raises(PgolfError, match="data directory does not exist"):
        from pgolf.data.manifest import check_data_dir
        check_data_dir(out)


def test_data_build_file_size_limit(tmp_path, capsys, docs_and_tokenizer):
    """The kernel refuses the write (EFBIG): same outcome as ENOSPC, on the real write path."""
    src, tok = docs_and_tokenizer
    out = tmp_path / "out"
    out.mkdir()
    (out / tok.name).write_bytes(tok.read_bytes())  # already in place: nothing to copy
    with file_size_limit(30_000):  # a 20,000-token shard (41 kB) does not fit
        code, err = run_cli(capsys, [*_build_argv(src, out / tok.name, out), "--overwrite"])  # out holds the tokenizer
    assert_one_line_error(code, err, "File too large")
    assert not (out / MANIFEST).exists() and leftovers(out) == []
    for path in out.glob("fineweb_*.bin"):
        shards.read_header(path)


def test_data_build_tokenizer_copy_on_a_full_disk(tmp_path, capsys, docs_and_tokenizer):
    """The tokenizer copied into the data directory is written atomically too: never a truncated .model."""
    src, tok = docs_and_tokenizer
    out = tmp_path / "out"
    with file_size_limit(tok.stat().st_size // 2):
        code, err = run_cli(capsys, _build_argv(src, tok, out))
    assert_one_line_error(code, err, "File too large")
    assert not (out / tok.name).exists() and not (out / MANIFEST).exists() and leftovers(out) == []


def test_data_build_unwritable_output(tmp_path, capsys, docs_and_tokenizer):
    src, tok = docs_and_tokenizer
    blocker = tmp_path / "a_file"
    blocker.write_text("in the way")
    code, err = run_cli(capsys, _build_argv(src, tok, blocker / "out"))
    assert_one_line_error(code, err, "a_file")


# ------------------------------------------------------------------------------------------------------- artifacts

def _qm():
    gen = torch.Generator().manual_seed(0)
    return quantize_state_dict({"w": torch.randn(64, 64, generator=gen), "b": torch.randn(8, generator=gen)})


def test_artifact_writer_on_a_full_disk_keeps_the_old_file(tmp_path):
    path = tmp_path / "artifact.pgolf"
    size = save_artifact(path, _qm(), config={}, tokenizer={}, codec="none")
    before = path.read_bytes()
    gen = torch.Generator().manual_seed(1)
    bigger = quantize_state_dict({"w": torch.randn(128, 128, generator=gen)})
    with file_size_limit(size + 100):
        with pytest.raises(PgolfError, match=r"artifact\.pgolf.*File too large"):
            save_artifact(path, bigger, config={}, tokenizer={}, codec="none")
    assert path.read_bytes() == before  # the previous artifact is untouched and still loads
    load_artifact(path)
    assert leftovers(tmp_path) == []


def test_artifact_writer_enospc_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "new.pgolf"

    def full(self, data):
        with open(self, "wb") as f:
            f.write(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(PgolfError, match=r"new\.pgolf.*No space left on device"):
        save_artifact(path, _qm(), config={}, tokenizer={})
    monkeypatch.undo()
    assert not path.exists() and leftovers(tmp_path) == []


def test_artifact_writer_unwritable_directory(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(PgolfError, match="f/run"):
        save_artifact(tmp_path / "f" / "run" / "a.pgolf", _qm(), config={}, tokenizer={})


# ---------------------------------------------------------------------------------------------------------- bundle

def test_bundle_on_a_full_disk(tmp_path, capsys):
    out = tmp_path / "train_gpt.py"
    with file_size_limit(4096):
        code, err = run_cli(capsys, ["bundle", "--preset", "baseline", "--out", str(out)])
    assert_one_line_error(code, err, "train_gpt.py", "File too large")
    assert not out.exists() and leftovers(tmp_path) == []


def test_bundle_into_an_unwritable_directory(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    code, err = run_cli(capsys, ["bundle", "--preset", "baseline", "--out", str(tmp_path / "f" / "train_gpt.py")])
    assert_one_line_error(code, err, "train_gpt.py")


def test_atomic_output_removes_its_temporary_file_on_any_error(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with fileio.atomic_output(tmp_path / "x.bin") as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_run_log_on_a_full_disk_is_one_error_naming_the_file(tmp_path):
    """log.txt / metrics.jsonl that stop taking bytes: one PgolfError naming the file, once; later lines (the error
    itself, on the way out) and close() do not fail again."""
    from pgolf.train.runlog import RunLog

    log = RunLog(tmp_path, echo=None)
    log.line("first")
    with file_size_limit(len("first\n")):
        with pytest.raises(PgolfError, match=r"log\.txt: cannot write .*pgolf train --resume"):
            log.line("x" * 100)
        log.line("the error, on the way out")  # log.txt was dropped: nothing raised
        with pytest.raises(PgolfError, match=r"metrics\.jsonl: cannot write"):
            log.metric(step=1, train_loss=2.0)
    log.close()
    assert (tmp_path / "log.txt").read_text() == "first\n" and log.metric_records == 0
