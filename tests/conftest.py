"""Shared test fixtures: the optional ../shared data folder, skipped cleanly when absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Without CUDA, the Triton kernels (pgolf/model/kernels.py) are tested through Triton's CPU interpreter. Triton reads
# this variable when a kernel is defined, so it is set here, before any test imports pgolf.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """`../shared/data` beside the checkout (or $PGOLF_SHARED_DATA), or None when it is not there."""
    env = os.environ.get("PGOLF_SHARED_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data; the test is skipped when the folder is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("../shared/data is not present")
    return path


TINY_MODEL_SETS = [
    "model.vocab_size=512", "model.num_layers=2", "model.model_dim=32", "model.num_heads=2", "model.num_kv_heads=1",
    "train.train_seq_len=64", "train.train_batch_tokens=1024", "train.micro_batch_tokens=512",
    "train.iterations=6", "train.warmup_steps=2", "train.val_loss_every=3", "train.train_log_every=1",
    "train.val_batch_tokens=4096", "train.val_max_tokens=4096", "train.max_wallclock_seconds=0",
    "train.max_total_seconds=0",  # cpu-smoke bounds itself to 180 s; a test's run stops at its steps, however slow
    "train.threads=1", "eval.batch_tokens=4096", "optim.muon_momentum_warmup_steps=5", "train.warmdown_iters=3",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small data directory (vocab-512 tokenizer trained on the offline demo corpus), built once per session."""
    import json

    from pgolf.data.build import build_dataset
    from pgolf.data.corpus import demo_documents

    root = tmp_path_factory.mktemp("tiny_data")
    docs = list(dict.fromkeys(d for d in demo_documents() if len(d) > 200))[:400]  # no document twice (a leak)
    src = root / "docs.jsonl"
    src.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    out = root / "data"
    build_dataset([src], out, vocab_size=512, val_docs=40, workers=1, shard_size=50_000, progress=False)
    return out


@pytest.fixture
def tiny_config():
    """A two-layer, 32-wide baseline-shaped config that trains in seconds on one CPU thread."""
    from pgolf.options import resolve_config

    def make(*extra: str):
        return resolve_config("cpu-smoke", [*TINY_MODEL_SETS, *extra], environ={})

    return make


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run much faster on one thread than on several of a shared CPU (use with
    `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def spawn_gloo_workers(worker, world: int = 2, timeout: float = 60) -> dict:
    """Run `worker(rank, world, port, queue)` in `world` spawned processes (gloo on a free local port) and return
    {rank: payload} from the `(rank, payload)` each puts on the queue.

    The workers are spawned, not forked: a fork of a process whose intra-op thread pool is already running (any
    earlier test that ran a large matmul) can deadlock the child in its first parallel kernel."""
    import multiprocessing as mp
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, world, port, queue)) for r in range(world)]
    for p in procs:
        p.start()
    try:
        return dict(queue.get(timeout=timeout) for _ in procs)
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()


def perturbed_tiny_gpt(*extra_sets: str, seed: int = 0):
    """A two-layer GPT of TINY_MODEL_SETS (plus `extra_sets`) in eval mode, every weight nudged by 0.1 N(0, 1) so that
    its zero-initialised paths (projections, gates) carry signal: the model the eval-mode tests score with."""
    import torch

    from pgolf.model.gpt import GPT
    from pgolf.options import resolve_config

    cfg = resolve_config("cpu-smoke", [*TINY_MODEL_SETS, *extra_sets], environ={})
    torch.manual_seed(seed)
    net = GPT(cfg.model)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def random_matrix_gpt(*extra_sets: str, std: float = 0.2):
    """A vocab-64 GPT of TINY_MODEL_SETS (plus `extra_sets`) in eval mode whose matrices are drawn N(0, std): "trained
    looking" weights (zero-initialised output projections would block LoRA), for the TTT tests."""
    import torch

    from pgolf.model.gpt import GPT
    from pgolf.options import resolve_config

    cfg = resolve_config("cpu-smoke", [*TINY_MODEL_SETS, "model.vocab_size=64", *extra_sets], environ={})
    torch.manual_seed(0)
    net = GPT(cfg.model)
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim == 2:
                p.normal_(0, std)
    return net.eval()
