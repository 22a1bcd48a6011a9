"""Training checkpoints: everything a run needs to continue exactly where it stopped, in pgolf's own format.

A checkpoint is one file per rank plus a manifest (docs/training.md#checkpoints-and-resume):

    RUN_DIR/checkpoint.json                     which step is current, world size, config, metrics position
    RUN_DIR/checkpoints/step00000200.rank0.pgck one file per rank (optimizer shards and loaders differ per rank)

Every file is written to a temporary name, flushed to disk and renamed into place; the manifest is renamed into place
only after every rank's file is whole, and names the step, so a process killed at any moment leaves either the old
checkpoint or the new one, never a mix. Older step files are deleted after the manifest moves on.

A disk that fills up (ENOSPC, or a quota: EDQUOT) while a rank file or the manifest is written stops the run with one
line naming the file, saying the last checkpoint (named by step) is intact and how to continue once there is space;
the temporary file is removed, and so are the new step's rank files when only the manifest did not fit. Stopping,
rather than training on without checkpoints, is deliberate (docs/RELIABILITY.md#disk-full-during-a-checkpoint).

The `.pgck` container holds no pickle: non-tensor state (step, clock, schedule, loader position, RNG states,
optimizer hyperparameters) is JSON, tensors and numpy arrays are raw little-endian bytes, and a SHA-256 of the whole
file is its last 32 bytes, so a truncated or damaged file is refused with one line instead of being half-loaded:

    b"PGCKPT01" | u64 header length | header JSON | tensor bytes (each at a 64-byte aligned offset) | sha256
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pgolf.errors import PgolfError
from pgolf.fileio import NO_SPACE_ERRNOS, WriteFailed, atomic_output, atomic_write_json

MAGIC = b"PGCKPT01"
FORMAT = 1
MANIFEST = "checkpoint.json"
CHECKPOINT_DIR = "checkpoints"
_ALIGN = 64
_DIGEST = 32
# Tensor dtypes a checkpoint may hold (a closed list: the reader never resolves arbitrary names).
_TORCH_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.int8,
    torch.uint8, torch.bool)}
_NUMPY_DTYPES = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64", "uint32", "uint16",
                 "uint8", "bool")
# What a run directory holds that pgolf wrote (removed by `--overwrite`, or by a fresh run in the same folder).
RUN_OUTPUTS = ("config.json", "log.txt", "metrics.jsonl", "artifact.pgolf", "result.json", "model_fp32.pt", MANIFEST)


# ---------------------------------------------------------------------------------------------- the container
def _encode(obj: Any, blobs: list) -> Any:
    """A JSON-able tree for `obj`, with tensors and arrays replaced by references into `blobs`."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        name = str(t.dtype).removeprefix("torch.")
        if name not in _TORCH_DTYPES:
            raise PgolfError(f"checkpoint: tensors of dtype {t.dtype} cannot be stored")
        blobs.append(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        return {"__tensor__": len(blobs) - 1, "dtype": name, "shape": list(t.shape)}
    if isinstance(obj, np.ndarray):
        a = np.ascontiguousarray(obj)
        if a.dtype.name not in _NUMPY_DTYPES:
            raise PgolfError(f"checkpoint: arrays of dtype {a.dtype} cannot be stored")
        blobs.append(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())
        return {"__ndarray__": len(blobs) - 1, "dtype": a.dtype.name, "shape": list(a.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(k.startswith("__") for k in obj):
            return {k: _encode(v, blobs) for k, v in obj.items()}
        return {"__items__": [[_encode(k, blobs), _encode(v, blobs)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, blobs) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, blobs) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise PgolfError(f"checkpoint: a {type(obj).__name__} cannot be stored")


def _decode(obj: Any, read) -> Any:
    if isinstance(obj, list):
        return [_decode(v, read) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        dtype = _TORCH_DTYPES[obj["dtype"]]
        shape = [int(n) for n in obj["shape"]]
        raw = read(obj["__tensor__"])
        if len(raw) != math.prod(shape) * dtype.itemsize:  # never uninitialised memory for a declared shape
            raise ValueError(f"tensor of shape {shape} and {dtype} stored in {len(raw)} bytes")
        if not len(raw):
            return torch.empty(shape, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dtype).reshape(shape)  # one copy, owned
    if "__ndarray__" in obj:
        if obj["dtype"] not in _NUMPY_DTYPES:
            raise ValueError(f"array dtype {obj['dtype']!r}")
        dtype = np.dtype(obj["dtype"]).newbyteorder("<")
        return np.frombuffer(read(obj["__ndarray__"]), dtype=dtype).astype(dtype.newbyteorder("="))\
            .reshape([int(n) for n in obj["shape"]])
    if "__tuple__" in obj:
        return tuple(_decode(v, read) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {_decode(k, read): _decode(v, read) for k, v in obj["__items__"]}
    return {k: _decode(v, read) for k, v in obj.items()}


def write_state(path: str | os.PathLike, state: dict, meta: dict | None = None) -> int:
    """Write `state` (nested dicts/lists/tuples of tensors, arrays and JSON values) to `path` atomically and durably;
    returns the file's size. `meta` is stored beside it as plain JSON (readable without the tensors)."""
    blobs: list[bytes] = []
    tree = _encode(state, blobs)
    entries, offset = [], 0
    for blob in blobs:
        offset = -(-offset // _ALIGN) * _ALIGN
        entries.append([offset, len(blob)])
        offset += len(blob)
    header = json.dumps({"format": FORMAT, "meta": meta or {}, "blobs": entries, "payload_bytes": offset,
                         "state": tree}, separators=(",", ":")).encode("utf-8")
    try:
        size = _write_container(Path(path), header, entries, blobs)
    except WriteFailed as exc:
        raise _write_failed(exc, (meta or {}).get("step"), _run_dir_of(Path(path))) from None
    _fsync_dir(Path(path).parent)
    return size


def _write_container(path: Path, header: bytes, entries: list, blobs: list) -> int:
    """The container's bytes, through a temporary file that is fsynced and renamed into place; returns its size."""
    digest = hashlib.sha256()
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            def put(data: bytes) -> None:
                digest.update(data)
                f.write(data)

            put(MAGIC + struct.pack("<Q", len(header)) + header)
            at = 0
            for (start, _), blob in zip(entries, blobs):
                put(b"\0" * (start - at))
                put(blob)
                at = start + len(blob)
            f.write(digest.digest())
            f.flush()
            os.fsync(f.fileno())
        return tmp.stat().st_size


def read_state(path: str | os.PathLike) -> tuple[dict, dict]:
    """(state, meta) of a file `write_state` wrote; one PgolfError if it is missing, truncated or damaged."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PgolfError(f"{path}: checkpoint file is missing") from None
    damaged = f"{path}: checkpoint is damaged ({len(data)} bytes"
    if len(data) < len(MAGIC) + 8 + _DIGEST or not data.startswith(MAGIC):
        raise PgolfError(f"{damaged}, not a pgolf checkpoint or truncated); nothing was resumed")
    if hashlib.sha256(memoryview(data)[:-_DIGEST]).digest() != data[-_DIGEST:]:
        raise PgolfError(f"{damaged}, checksum mismatch: truncated or corrupted); nothing was resumed")
    (n,) = struct.unpack_from("<Q", data, len(MAGIC))
    body = len(MAGIC) + 8
    try:
        header = json.loads(data[body:body + n].decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')!r}, this pgolf reads {FORMAT}")
        payload = memoryview(data)[body + n:len(data) - _DIGEST]
        if len(payload) != header["payload_bytes"]:
            raise ValueError("payload length")
        blobs = header["blobs"]

        def read(i: int) -> memoryview:
            start, size = blobs[i]
            if start < 0 or size < 0 or start + size > len(payload):
                raise ValueError("blob out of range")
            return payload[start:start + size]

        return _decode(header["state"], read), header["meta"]
    except (ValueError, KeyError, IndexError, TypeError, RuntimeError) as exc:
        raise PgolfError(f"{damaged}, unreadable: {exc}); nothing was resumed") from None


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (best effort: not every platform can open a directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------- RNG states
def rng_state() -> dict:
    """Every random generator a run may draw from: torch CPU (and CUDA), numpy's global, Python's `random`."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------- the run directory
def rank_file(step: int, rank: int) -> str:
    return f"{CHECKPOINT_DIR}/step{step:08d}.rank{rank}.pgck"


def read_manifest(run_dir: str | os.PathLike) -> dict:
    """RUN_DIR/checkpoint.json, or one PgolfError saying why there is nothing to resume."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise PgolfError(f"{run_dir}: no checkpoint to resume ({MANIFEST} is missing; a run writes one every "
                         "train.checkpoint_every steps and when stopped by SIGINT/SIGTERM)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT:
            raise ValueError(f"format {manifest.get('format')!r}")
        int(manifest["step"]), int(manifest["world_size"]), dict(manifest["config"]), list(manifest["files"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise PgolfError(f"{path}: not a pgolf checkpoint manifest ({exc}); nothing was resumed") from None
    return manifest


def write_manifest(run_dir: Path, manifest: dict) -> None:
    """Point RUN_DIR/checkpoint.json at the step files of `manifest` (the commit). If the disk is full, the new
    step's files (those the current manifest does not name) are removed and one PgolfError says so."""
    try:
        atomic_write_json(run_dir / MANIFEST, {"format": FORMAT, **manifest})
    except WriteFailed as exc:
        kept = set(_current_files(run_dir))
        for name in manifest.get("files", []):
            if name not in kept:
                (run_dir / name).unlink(missing_ok=True)
        raise _write_failed(exc, manifest.get("step"), run_dir, removed=True) from None
    _fsync_dir(run_dir)


def _run_dir_of(path: Path) -> Path | None:
    """The run directory of a rank file (RUN_DIR/checkpoints/stepS.rankR.pgck), or None for another path."""
    return path.parent.parent if path.parent.name == CHECKPOINT_DIR else None


def _current_files(run_dir: Path) -> list[str]:
    """The rank files the checkpoint manifest on disk names (none when there is no readable manifest)."""
    try:
        return [str(n) for n in read_manifest(run_dir)["files"]]
    except PgolfError:
        return []


def _write_failed(exc: WriteFailed, step: Any, run_dir: Path | None, removed: bool = False) -> PgolfError:
    """The one line for a checkpoint that could not be written: which file, why, what is intact, what to do."""
    what = f"the checkpoint of step {step}" if step is not None else "the checkpoint"
    why = "no space left on device" if exc.errno in NO_SPACE_ERRNOS else exc.strerror
    gone = "its rank files were removed" if removed else "its temporary file was removed"
    if run_dir is None:
        return PgolfError(f"{exc.path}: {why}: {what} was not written ({gone})")
    try:
        last = read_manifest(run_dir)
        intact = f"the last checkpoint, step {int(last['step'])} ({run_dir / MANIFEST}), is intact"
        then = f"continue from it with: pgolf train --resume {run_dir} --data DATA_DIR"
    except PgolfError:
        intact = "no earlier checkpoint exists"
        then = f"start the run again (pgolf train --overwrite --run-dir {run_dir} ...)"
    todo = "free disk space" if exc.errno in NO_SPACE_ERRNOS else "fix the disk or the file-size limit"
    return PgolfError(f"{exc.path}: {why}: {what} was not written ({gone}) and the run stops; {intact}; {todo}, "
                      f"then {then}")


def prune(run_dir: Path, keep: list[str]) -> None:
    """Delete the step files (and leftover temporaries) of checkpoints other than `keep`."""
    folder = run_dir / CHECKPOINT_DIR
    if not folder.is_dir():
        return
    kept = {Path(name).name for name in keep}
    for f in folder.iterdir():
        if f.is_file() and f.name not in kept and (f.suffix in (".pgck", ".tmp")):
            f.unlink(missing_ok=True)


def clear_run_outputs(run_dir: Path) -> None:
    """Remove what an earlier run wrote in `run_dir` (its outputs and checkpoints; nothing else)."""
    for name in RUN_OUTPUTS:
        (run_dir / name).unlink(missing_ok=True)
    prune(run_dir, [])
    folder = run_dir / CHECKPOINT_DIR
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def run_dir_problem(run_dir: Path, existing: str) -> str | None:
    """Why a run cannot start in `run_dir` under policy `existing` (refuse, overwrite, resume), or None."""
    if existing == "resume":
        return None  # read_manifest says what is missing
    if existing == "refuse" and run_dir.is_dir() and any(run_dir.iterdir()):
        return (f"run directory {run_dir} is not empty; pass --resume {run_dir} to continue its run from the last "
                "checkpoint, or --overwrite to replace it")
    return None
