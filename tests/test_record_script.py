"""benchmarks/record_script.py (issue 20): the exact-once patches of the record's train_gpt.py (PR #1855), the FA3
replacement on torch's varlen_attn (checked on the CPU against a reference attention standing in for the CUDA-only
kernel), the synthetic CaseOps-shaped shards, check-imports and benchmarks/record_script_run.sh's environment.
Nothing here needs the official repository; the tests that use its read-only mirror skip cleanly without it."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "benchmarks" / "record_script.py"
RUN_SH = ROOT / "benchmarks" / "record_script_run.sh"
MIRROR = Path(os.environ.get("PGOLF_OFFICIAL_MIRROR", "/work/.mirror/openai+parameter-golf/repo"))

spec = importlib.util.spec_from_file_location("record_script", TOOL)
rs = importlib.util.module_from_spec(spec)
sys.modules["record_script"] = rs  # dataclasses look the module up while the class is made
spec.loader.exec_module(rs)


def run_tool(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, env=env, timeout=300,
                          **kw)


# A tiny stand-in for the record's script: the anchors of every patch, in the context they have there, around code
# that runs on the CPU (no attention call: the CUDA-only kernel is tested through the shim below).
FAKE_RECORD = '''\
import os, sys, time
import torch, torch.distributed as dist
from flash_attn_interface import (
    flash_attn_func as flash_attn_3_func,
    flash_attn_varlen_func,
)


def log(msg):
    print(msg, flush=True)


class H:
    iterations = int(os.environ.get("ITERATIONS", 3))
    val_loss_every = int(os.environ.get("VAL_LOSS_EVERY", 0))
    distributed = False


def train_model(h):
    cu_bucket_size = 64
    warmup_cu_buckets = tuple(cu_bucket_size * i for i in range(1, 5))
    log(f"warmup_cu_buckets:{','.join(str(b) for b in warmup_cu_buckets)}")
    step = 0
    approx_training_time_ms = 0.0
    while True:
        last_step = step == h.iterations
        should_validate = (
            last_step or h.val_loss_every > 0 and step % h.val_loss_every == 0
        )
        if should_validate:
            log(f"validation at step {step}")
        if last_step:
            break
        step += 1
        approx_training_time_ms += 25.0
        tok_per_sec = 786432 * step / (approx_training_time_ms / 1e3)
        log(
            f"{step}/{h.iterations} train_time: {approx_training_time_ms/60000:.1f}m tok/s: {tok_per_sec:.0f}"
        )
    log("peak memory allocated: 0 MiB")
    log("ema:applying EMA weights")
    log("after training: eval, GPTQ, serialize")


if __name__ == "__main__":
    train_model(H())
'''


def _git_repo(tmp_path: Path, script: str, model: bytes = b"fake model") -> Path:
    """A throwaway git repository holding a fake record folder (script + tokenizer), committed once."""
    repo = tmp_path / "mirror"
    record = repo / rs.RECORD_DIR
    (record / "tokenizers").mkdir(parents=True)
    (record / "train_gpt.py").write_text(script)
    (record / "tokenizers" / "tok.model").write_bytes(model)
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(tmp_path), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "fake record"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env, capture_output=True)
    return repo


def _imports_fa3(text: str) -> bool:
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and node.module and "flash_attn_interface" in node.module:
            return True
        if isinstance(node, ast.Import) and any("flash_attn_interface" in a.name for a in node.names):
            return True
    return False


def test_fake_record_holds_every_anchor_once():
    for p in rs.PATCHES:
        assert FAKE_RECORD.count(p.old) == 1, p.name


def test_prepare_patches_fake_record(tmp_path):
    repo = _git_repo(tmp_path, FAKE_RECORD)
    out = tmp_path / "out"
    proc = run_tool("prepare", "--mirror", str(repo), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    text = (out / "train_gpt.py").read_text()
    compile(text, "train_gpt.py", "exec")
    assert not _imports_fa3(text)
    assert all(p.new in text for p in rs.PATCHES)
    assert (out / "tok.model").read_bytes() == b"fake model"
    source = (out / "SOURCE.txt").read_text()
    assert all(f"  {p.name}: " in source for p in rs.PATCHES)
    assert "sha256_original: " in source and "sha256_patched: " in source and "commit: " in source
    assert sorted(p.name for p in out.iterdir()) == ["SOURCE.txt", "tok.model", "train_gpt.py"]  # no temp files


@pytest.mark.parametrize("broken", ["missing", "twice"])
def test_prepare_refuses_an_anchor_not_there_exactly_once(tmp_path, broken):
    anchor = rs.PATCHES[3].old  # step-time-log
    script = FAKE_RECORD.replace(anchor, "") if broken == "missing" else FAKE_RECORD + f"\n# {anchor}\n"
    repo = _git_repo(tmp_path, script)
    out = tmp_path / "out"
    proc = run_tool("prepare", "--mirror", str(repo), "--out", str(out))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "patch step-time-log" in proc.stderr
    assert not out.exists()


def test_prepare_bad_mirror_is_one_line(tmp_path):
    proc = run_tool("prepare", "--mirror", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    proc = run_tool("prepare", "--mirror", str(tmp_path), "--out", str(tmp_path / "out"))  # not a git dir
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    proc = run_tool("prepare", "--out", str(tmp_path / "out"))  # argparse: one line too
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def _has_varlen() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _has_varlen(), reason="this torch has no torch.nn.attention.varlen")
@pytest.mark.parametrize("train_only", [True, False])
def test_patched_fake_record_runs(tmp_path, train_only):
    script = tmp_path / "train_gpt.py"
    script.write_text(rs.apply_patches(FAKE_RECORD))
    env = {**os.environ, "ITERATIONS": "3", "PGOLF_WARMUP_CU_BUCKETS": "128,64"}
    env["PGOLF_TRAIN_ONLY"] = "1" if train_only else "0"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "warmup_cu_buckets:64,128\n" in out
    assert "3/3 train_time: 0.0m tok/s: 31457280 step_avg: 25.00ms interval_step_ms: 25.00" in out
    assert "peak memory allocated" in out
    if train_only:
        assert "pgolf_train_only:" in out and "validation" not in out and "ema:" not in out
    else:
        assert "validation at step 3" in out and "after training" in out


# ---------------------------------------------------------------------------------------------- the FA3 shim

def reference_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                     window_size=(-1, -1)):
    """What torch 2.11's varlen_attn computes (FlashAttention-2 on CUDA), on the CPU: per segment of cu_seq, query head
    h attends kv head h // (Hq / Hkv); causal exactly when window_size == (-1, 0) (a tuple, as torch compares)."""
    assert query.dtype == key.dtype == value.dtype and query.dtype in (torch.bfloat16, torch.float16)
    assert cu_seq_q.dtype == torch.int32 and torch.equal(cu_seq_q, cu_seq_k) and max_q == max_k
    assert query.dim() == key.dim() == 3 and query.shape[0] == key.shape[0] == cu_seq_q[-1].item()
    assert window_size in ((-1, -1), (-1, 0))
    causal = window_size == (-1, 0)
    group = query.shape[1] // key.shape[1]
    out = torch.full_like(query, float("nan"))
    cu = cu_seq_q.tolist()
    for s, e in zip(cu[:-1], cu[1:]):
        if e == s:
            continue
        assert 0 < e - s <= max_q
        q = query[s:e].transpose(0, 1).float()
        k = key[s:e].transpose(0, 1).float().repeat_interleave(group, 0)
        v = value[s:e].transpose(0, 1).float().repeat_interleave(group, 0)
        out[s:e] = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale).transpose(0, 1).to(out.dtype)
    return out


def reference_varlen_gqa_keyword(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None, scale=None,
                                 window_size=(-1, -1), enable_gqa=False, seqused_k=None, block_table=None,
                                 num_splits=None):
    """torch >= 2.13's signature: GQA only with enable_gqa=True."""
    if query.shape[1] != key.shape[1] and not enable_gqa:
        raise ValueError("GQA needs enable_gqa=True")
    return reference_varlen(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, scale=scale, window_size=window_size)


def load_shim(monkeypatch, fake) -> dict:
    """The code of patch fa3-to-varlen-attn, run against `fake` as torch.nn.attention.varlen.varlen_attn."""
    module = types.ModuleType("torch.nn.attention.varlen")
    module.varlen_attn = fake
    monkeypatch.setitem(sys.modules, "torch.nn.attention.varlen", module)
    namespace = {"os": os, "sys": sys, "torch": torch, "dist": torch.distributed}
    exec(compile(rs.PATCHES[0].new, "shim", "exec"), namespace)
    return namespace


def dense_reference(q, k, v):
    """(B, T, H, D) causal GQA attention, each row its own sequence."""
    y = F.scaled_dot_product_attention(q.transpose(1, 2).float(), k.transpose(1, 2).float(), v.transpose(1, 2).float(),
                                       is_causal=True, enable_gqa=True)
    return y.transpose(1, 2)


@pytest.mark.parametrize("fake", [reference_varlen, reference_varlen_gqa_keyword])
def test_shim_matches_causal_gqa_attention(monkeypatch, fake):
    shim = load_shim(monkeypatch, fake)
    assert shim["_PGOLF_VARLEN_KWARGS"] == ({"enable_gqa": True} if fake is reference_varlen_gqa_keyword else {})
    torch.manual_seed(0)
    b, t, h, hkv, d = 3, 40, 8, 4, 16
    q, k, v = (torch.randn(b, t, n, d, dtype=torch.bfloat16) for n in (h, hkv, hkv))
    # Dense flash_attn_3_func(q, k, v, causal=True): (B, T, H, D) in, (B, T, H, D) out, rows independent.
    y = shim["flash_attn_3_func"](q, k, v, causal=True)
    assert y.shape == (b, t, h, d) and y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), dense_reference(q, k, v), atol=2e-2, rtol=2e-2)
    # The record's varlen call: one packed row, documents cut by cu_seqlens padded with the row length (empty tail).
    docs = [0, 7, 30, 31, 64, 120]
    cu = torch.tensor(docs + [t * b] * 10, dtype=torch.int32)
    qp, kp, vp = (z.reshape(1, b * t, z.shape[2], d) for z in (q, k, v))
    y = shim["flash_attn_varlen_func"](qp[0], kp[0], vp[0], cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=64,
                                       max_seqlen_k=64, causal=True, window_size=(-1, -1))[None]
    assert y.shape == (1, b * t, h, d)
    for s, e in zip(docs, docs[1:] + [b * t]):
        want = dense_reference(qp[:, s:e], kp[:, s:e], vp[:, s:e])
        torch.testing.assert_close(y[:, s:e].float(), want, atol=2e-2, rtol=2e-2)
    # float32 inputs (FA3 refused them) go to the kernel as bf16; the output comes back as float32.
    y32 = shim["flash_attn_3_func"](q.float(), k.float(), v.float(), causal=True)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32, dense_reference(q, k, v), atol=2e-2, rtol=2e-2)
    # Not causal: the full window.
    y = shim["flash_attn_3_func"](q, k, v, causal=False)
    full = F.scaled_dot_product_attention(q.transpose(1, 2).float(), k.transpose(1, 2).float(),
                                          v.transpose(1, 2).float(), enable_gqa=True).transpose(1, 2)
    torch.testing.assert_close(y.float(), full, atol=2e-2, rtol=2e-2)


@pytest.mark.skipif(not _has_varlen(), reason="this torch has no torch.nn.attention.varlen")
def test_shim_keyword_follows_the_installed_signature(monkeypatch):
    from torch.nn.attention.varlen import varlen_attn

    shim = load_shim(monkeypatch, varlen_attn)
    has = "enable_gqa" in inspect.signature(varlen_attn).parameters
    assert shim["_PGOLF_VARLEN_KWARGS"] == ({"enable_gqa": True} if has else {})


# ---------------------------------------------------------------------------------------------- tokenizer + shards

def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(num << 3) + _varint(payload)
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def fake_model(n: int = 300, bos_id: int = 1) -> bytes:
    """A SentencePiece ModelProto with <unk>, <s>, </s>, 4 user-defined CaseOps operators, 6 byte pieces, text."""
    pieces = [("<unk>", 2), ("<s>", 3), ("</s>", 3)] + [(chr(0xE001 + i), 4) for i in range(4)]
    pieces += [(f"<0x{i:02X}>", 6) for i in range(6)]
    pieces += [(("\u2581" if i % 3 == 0 else "") + "ab" * (1 + i % 4), 1) for i in range(n - len(pieces))]
    body = b"".join(_field(1, _field(1, p.encode()) + b"\x15\x00\x00\x00\x00" + (_field(3, t) if t != 1 else b""))
                    for p, t in pieces)
    trainer = _field(3, n) + _field(40, 0) + _field(41, bos_id) + _field(42, 2) + _field(43, -1)
    return body + _field(2, trainer)


def test_read_sentencepiece_fake_model(tmp_path):
    path = tmp_path / "tok.model"
    path.write_bytes(fake_model(300))
    vocab = rs.read_sentencepiece(path)
    assert len(vocab.pieces) == 300 and vocab.bos_id == 1
    assert vocab.types[:3].tolist() == [2, 3, 3] and vocab.types[3:7].tolist() == [4] * 4
    weights = rs.original_bytes(vocab)
    assert weights[:7].tolist() == [0, 0, 0, 0, 0, 0, 0]  # unk text is not charged here; operators weigh 0
    assert weights[7:13].tolist() == [1] * 6
    assert weights[13] == 1 + 2  # "\u2581ab": a space and two letters


def test_shards_have_the_record_layout(tmp_path):
    from pgolf.data.shards import read_shard, shard_paths

    tok = tmp_path / "tok.model"
    tok.write_bytes(fake_model(300))
    out = tmp_path / "data"
    n_train, n_val = 250_000, 5_000
    proc = run_tool("shards", "--out", str(out), "--tokenizer", str(tok), "--train-tokens", str(n_train),
                    "--val-tokens", str(n_val), "--shard-tokens", "120000", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cu_buckets_1gpu.txt", "fineweb_train_000000.bin", "fineweb_train_000001.bin",
                     "fineweb_val_000000.bin", "fineweb_val_bytes_000000.bin", "record_shards.json"]
    train = [np.asarray(read_shard(p)) for p in shard_paths(out, "train")]
    assert [len(t) for t in train] == [125_000, 125_000]  # never shorter than --shard-tokens
    val = np.asarray(read_shard(out / "fineweb_val_000000.bin"))
    side = np.asarray(read_shard(out / "fineweb_val_bytes_000000.bin"))
    assert len(val) == len(side) == n_val and val[0] == 1
    stream = np.concatenate(train + [val])
    assert stream.max() < 300 and not np.isin(stream, [0, 2]).any()  # no <unk>, </s>
    assert train[0][0] == 1
    docs = np.diff(np.flatnonzero(stream == 1))
    assert 400 < docs.mean() < 2000 and docs.max() <= rs.MAX_DOC_TOKENS
    assert (side[val == 1] == 0).all() and (side[val != 1] <= 9).all() and side.sum() > 0
    info = json.loads((out / "record_shards.json").read_text())
    assert info["vocab_size"] == 300 and info["bos_id"] == 1 and info["train_tokens"] == n_train
    assert (out / "cu_buckets_1gpu.txt").read_text().strip() == ",".join(map(str, info["cu_buckets_1gpu"]))
    # A second run into the same folder is refused (stale shards would be globbed), unless --force.
    proc = run_tool("shards", "--out", str(out), "--tokenizer", str(tok), "--train-tokens", str(n_train),
                    "--val-tokens", str(n_val), "--shard-tokens", "120000")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def test_micro_batch_segments_follow_the_record_loader():
    bos = 1
    shard = np.full(rs.MICRO_BATCH_TOKENS * 2 + 500, 9, dtype=np.uint16)
    shard[[3, 100, 5000]] = bos  # the first window starts at the first BOS: documents at 0, 97 and 4997 in it
    segs = rs.micro_batch_segments([shard], bos)
    # 97 tokens: 1 segment; 4900: 3 (cut every 2,048); 93,307 to the window's end: 46. The second window (98,305
    # further, no BOS): 98,304 / 2,048 = 48. No room for a third.
    assert segs.tolist() == [1 + 3 + 46, 48]
    assert rs.cu_buckets(segs) == [64]
    assert rs.cu_buckets(np.array([63, 64, 127, 128])) == [64, 128, 192]


@pytest.mark.parametrize("args, what", [
    (["--train-tokens", "1000"], "--train-tokens"),
    (["--val-tokens", "10"], "--val-tokens"),
    (["--shard-tokens", "5000"], "--shard-tokens"),
    (["--train-tokens", "abc"], "integer"),
])
def test_shards_bad_input_is_one_line(tmp_path, args, what):
    tok = tmp_path / "tok.model"
    tok.write_bytes(fake_model(300))
    proc = run_tool("shards", "--out", str(tmp_path / "d"), "--tokenizer", str(tok), *args)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and what in proc.stderr


def test_shards_bad_tokenizer_is_one_line(tmp_path):
    bad = tmp_path / "bad.model"
    bad.write_bytes(b"\x07\x07 not a model")
    for tok in (bad, tmp_path / "missing.model"):
        proc = run_tool("shards", "--out", str(tmp_path / "d"), "--tokenizer", str(tok))
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr


def test_check_imports(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("import os\nfrom pathlib import Path\n\ndef f():\n    import no_such_module_xyz\n")
    proc = run_tool("check-imports", str(good))
    assert proc.returncode == 0 and "warn" in proc.stdout and "no_such_module_xyz" in proc.stdout
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom pathlib import NoSuchName\n")
    proc = run_tool("check-imports", str(bad))
    assert proc.returncode == 1 and "FAIL" in proc.stdout and "NoSuchName" in proc.stdout


# ---------------------------------------------------------------------------------------------- the run script

def test_run_script_environment(tmp_path):
    """record_script_run.sh with a stand-in interpreter that prints its environment and arguments."""
    stub = tmp_path / "python"
    stub.write_text('#!/bin/sh\nenv > "$STUB_OUT"\necho "ARGS=$*" >> "$STUB_OUT"\n')
    stub.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    (data / "fineweb_train_000000.bin").write_bytes(b"")
    (data / "cu_buckets_1gpu.txt").write_text("128,192\n")
    record = tmp_path / "record"
    record.mkdir()
    (record / "train_gpt.py").write_text("")
    (record / "tok.model").write_bytes(b"")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGOLF_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))}
    env.update(PYTHON=str(stub), STUB_OUT=str(tmp_path / "env.txt"), PGOLF_RECORD_DIR=str(record), RANK="3",
               WORLD_SIZE="8", OUT=str(tmp_path / "out"))
    proc = subprocess.run(["bash", str(RUN_SH), str(data), "12"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    got = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines() if "=" in line)
    assert got["ARGS"] == f"-u {record / 'train_gpt.py'}"
    want = {"ITERATIONS": "12", "MAX_WALLCLOCK_SECONDS": "0", "VAL_LOSS_EVERY": "0", "TRAIN_LOG_EVERY": "1",
            "PGOLF_TRAIN_ONLY": "1", "PYTHONUNBUFFERED": "1", "CASEOPS_ENABLED": "1", "VOCAB_SIZE": "8192",
            "TRAIN_BATCH_TOKENS": "786432", "TRAIN_SEQ_LEN": "2048", "DATA_PATH": str(data),
            "TOKENIZER_PATH": str(record / "tok.model"), "PGOLF_WARMUP_CU_BUCKETS": "128,192"}
    assert {k: got.get(k) for k in want} == want
    assert "RANK" not in got and "WORLD_SIZE" not in got and "LOCAL_RANK" not in got  # plain one-process run


@pytest.mark.parametrize("args", [[], ["x"], ["/nonexistent", "5"], ["DATA", "0"], ["DATA", "five"]])
def test_run_script_bad_arguments(tmp_path, args):
    data = tmp_path / "data"
    data.mkdir()
    (data / "fineweb_train_000000.bin").write_bytes(b"")
    args = [str(data) if a == "DATA" else a for a in args]
    env = {**os.environ, "PGOLF_RECORD_DIR": str(tmp_path)}
    proc = subprocess.run(["bash", str(RUN_SH), *args], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


# ---------------------------------------------------------------------------------------------- the real record

needs_mirror = pytest.mark.skipif(not (MIRROR / "HEAD").exists() and not (MIRROR / ".git").exists(),
                                  reason=f"no official mirror at {MIRROR}")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("record")
    proc = run_tool("prepare", "--mirror", str(MIRROR), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    return out


@needs_mirror
def test_prepare_real_record(prepared):
    text = (prepared / "train_gpt.py").read_text()
    compile(text, "train_gpt.py", "exec")
    assert not _imports_fa3(text)
    assert all(p.new in text for p in rs.PATCHES)
    source = (prepared / "SOURCE.txt").read_text()
    assert all(f"  {p.name}: " in source for p in rs.PATCHES)
    assert "record: " + rs.RECORD_DIR in source
    models = list(prepared.glob("*.model"))
    assert [m.name for m in models] == ["fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model"]
    vocab = rs.read_sentencepiece(models[0])
    assert len(vocab.pieces) == 8192 and vocab.bos_id == rs.RECORD_BOS_ID
    spm = pytest.importorskip("sentencepiece")
    sp = spm.SentencePieceProcessor(model_file=str(models[0]))
    assert sp.vocab_size() == len(vocab.pieces) and sp.bos_id() == vocab.bos_id
    assert all(sp.id_to_piece(i) == vocab.pieces[i] for i in range(0, 8192, 97))
    assert all(bool(sp.is_control(i)) == (vocab.types[i] == rs.CONTROL) for i in range(64))


@needs_mirror
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit notices raised while the script imports
def test_real_record_attention_through_the_shim(prepared, monkeypatch):
    """The record's own GPT (eval mode: eager MLP and loss, no Triton) with attention through the shim on the CPU
    reference: a packed row cut at BOS gives each document the logits it gets alone (the dense path), so the varlen
    and dense call sites agree on layout, causality, GQA and the per-document cut."""
    spec = importlib.util.spec_from_file_location("record_train_gpt", prepared / "train_gpt.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "_pgolf_varlen_attn", reference_varlen_gqa_keyword)
    monkeypatch.setattr(module, "_PGOLF_VARLEN_KWARGS", {"enable_gqa": True})
    h = module.Hyperparameters()
    h.num_layers, h.xsa_last_n, h.parallel_start_layer, h.loop_start, h.loop_end = 5, 5, 3, 1, 2
    h.sparse_attn_gate_enabled = h.smear_gate_enabled = True
    torch.manual_seed(0)
    model = module.GPT(h).bfloat16().eval()
    model.looping_active = True
    with torch.no_grad():
        for p in (model.qo_bank, model.kv_bank, model.mlp_up_bank, model.mlp_down_bank):
            p.normal_(0.0, 0.05)
    module.BOS_ID = 1
    doc_a, doc_b = torch.randint(8, 8192, (37,)), torch.randint(8, 8192, (27,))
    doc_a[0] = doc_b[0] = 1
    packed = torch.cat([doc_a, doc_b])[None]
    cu = torch.tensor([0, 37, 64] + [64] * 61, dtype=torch.int32)
    later = packed.clone()
    later[0, 30] = 7 if later[0, 30] != 7 else 8  # a later token of document A
    with torch.no_grad():
        y = model.forward_logits(packed, cu_seqlens=cu, max_seqlen=2048).float()
        y_later = model.forward_logits(later, cu_seqlens=cu, max_seqlen=2048).float()
        a = model.forward_logits(doc_a[None]).float()
        b = model.forward_logits(doc_b[None]).float()
    assert torch.isfinite(y).all()
    assert torch.equal(y[:, :30], y_later[:, :30]) and not torch.equal(y[:, 30:37], y_later[:, 30:37])  # causal
    assert torch.equal(y[:, 37:], y_later[:, 37:])  # and cut at the BOS
    torch.testing.assert_close(y[:, :37], a, atol=0.15, rtol=0.05)
    torch.testing.assert_close(y[:, 37:], b, atol=0.15, rtol=0.05)
    assert (y[:, 37:] - b).abs().mean() < 0.02
