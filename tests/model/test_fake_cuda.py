"""The CUDA code paths traced with FAKE CUDA tensors on a CPU-only machine (issue 20), so that signature, dtype and
device errors on the CUDA side fail in CI instead of on the first GPU run.

`torch._subclasses.fake_tensor.FakeTensorMode` gives tensors whose device is `cuda:0` but which hold no data: every
op runs its meta/fake implementation, which checks shapes, dtypes and devices (a CPU tensor mixed into a CUDA op
fails as it would on a GPU) and returns fake results. Through it run:

- the record's training step (the `record` preset at test size), as `Trainer._step` takes it on CUDA: the model
  moved with `.to("cuda")`, `cast_body` (bf16 tables), the Triton kernels as custom ops (their `register_fake`
  implementations), the optimizers and EMA, a packed batch with `Segments.to("cuda")`, `torch.autocast("cuda",
  bfloat16)` through `autocast_for`, document-isolated attention through the installed torch's REAL
  `torch.nn.attention.varlen.varlen_attn` (its Python wrapper, its custom op and the op's registered fake), the
  backward, gradient clipping, one Muon + AdamW(fused) step and the EMA update;
- phased LoRA TTT on CUDA: the first scored chunk of `PhasedLoRAMode.run` (schedule, adapters drawn with a CPU
  generator, fused AdamW, the window index tensors, the adapted forward under autocast), then one adaptation step.

What fake tensors do not check, `FlashContract` does: the input contract of the flash-attention kernels (one
half-precision dtype, last dimension contiguous, int32 cu_seqlens, ...), that every tensor given to pgolf's Triton
ops is on the GPU (their fakes only read shapes), and that a random draw's generator is on its tensor's device.

Three things stand in for the GPU (see each one's docstring): `_install_fake_cuda_guard` (a torch built without CUDA
has no CUDA device guard, which every autograd node on a CUDA tensor asks for), `backward_here` (torch's autograd
engine asks the CUDA driver for streams before running anything) and `cuda_autocast` (torch.autocast switches
itself off when `torch.cuda.is_available()` is false). torch.compile is not traced: Dynamo/Inductor need a real
device, so `optim.muon_compile` and `eval.compile` are off here and the model runs eagerly.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from pgolf.model import attention, kernels

pytestmark = pytest.mark.usefixtures("one_thread", "fake_cuda_guard")

CUDA = torch.device("cuda")
HALF = (torch.float16, torch.bfloat16)
# The record preset at test size: a loop (one extra pass over layers 1-2), two-lane residuals (from layer 2), XSA,
# sparse gates, SmearGate, skip gates, GQA 4/2 and head_dim 64 with partial RoPE 16/64; few layers, since every op
# of a fake tensor costs Python time.
RECORD_AT_TEST_SIZE = [
    "model.vocab_size=1024", "model.num_layers=4", "model.model_dim=256", "model.num_heads=4", "model.num_kv_heads=2",
    "model.num_loops=1", "model.loop_start=1", "model.loop_end=2", "model.parallel_start=2", "train.train_seq_len=128",
    "optim.muon_compile=off", "eval.compile=off",  # torch.compile cannot run without a device: eager here
    "ttt.batch_docs=4", "ttt.rank=8", "ttt.chunk=16", "ttt.prefix_docs=8",
]


# ------------------------------------------------------------------------------------------- fake CUDA machinery

_GUARD_SOURCE = """\
// Test only (tests/model/test_fake_cuda.py): a do-nothing CUDA device guard for a torch built without CUDA, so
// that fake CUDA tensors can carry autograd metadata. CUDA builds install the same one themselves.
#include <c10/core/impl/FakeGuardImpl.h>
C10_REGISTER_GUARD_IMPL(CUDA, c10::impl::FakeGuardImpl<c10::DeviceType::CUDA>);
"""
_guard: dict = {}  # once per process: {"ok": bool, "why": str}


def _install_fake_cuda_guard(workdir: Path) -> str | None:
    """Make fake CUDA tensors usable in this process; None when they are, else why not.

    On a CUDA build (GPU or not) `FakeTensorMode.__enter__` installs a fake CUDA device guard itself
    (`torch._C._ensureCUDADeviceGuardSet`). A CPU-only build has no CUDA guard at all, and torch looks it up for
    any autograd node on a CUDA tensor (`InputMetadata` records the device's stream) and for several ops: the
    lookup throws "PyTorch is not linked with support for cuda devices", in places that abort the process. So here
    c10's own `FakeGuardImpl<CUDA>` (a header-only, do-nothing guard) is registered from a two-line shared library
    built against the installed torch's headers (about a second). It stays registered for the rest of the process;
    nothing else can touch CUDA in a CPU-only build."""
    if "ok" in _guard:
        return None if _guard["ok"] else _guard["why"]
    _guard.update(ok=True, why="")
    if torch.cuda._is_compiled():
        return None
    root = Path(torch.__file__).parent
    compiler = shutil.which(os.environ.get("CXX", "c++"))
    why = None
    if compiler is None:
        why = "no C++ compiler to build the fake CUDA device guard"
    elif not (root / "include" / "c10" / "core" / "impl" / "FakeGuardImpl.h").is_file():
        why = "this torch ships no c10/core/impl/FakeGuardImpl.h"
    else:
        source, library = workdir / "fake_cuda_guard.cpp", workdir / "fake_cuda_guard.so"
        source.write_text(_GUARD_SOURCE)
        cmd = [compiler, "-shared", "-fPIC", "-O0", "-std=c++17",
               f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}", f"-I{root / 'include'}",
               str(source), f"-L{root / 'lib'}", "-lc10", f"-Wl,-rpath,{root / 'lib'}", "-o", str(library)]
        built = subprocess.run(cmd, capture_output=True, text=True)
        if built.returncode:
            why = f"building the fake CUDA device guard failed: {built.stderr.strip()[-300:]}"
        else:
            ctypes.CDLL(str(library), mode=ctypes.RTLD_GLOBAL)  # the static registrar runs on load
    if why:
        _guard.update(ok=False, why=why)
    return why


@pytest.fixture(scope="module")
def fake_cuda_guard(tmp_path_factory):
    """Every test here needs it BEFORE its first fake CUDA tensor (see `_install_fake_cuda_guard`)."""
    why = _install_fake_cuda_guard(tmp_path_factory.mktemp("fake_cuda_guard"))
    if why:
        pytest.skip(why)


@pytest.fixture
def cuda_autocast(monkeypatch):
    """`torch.autocast("cuda", bfloat16)` for real: it switches itself off (with a warning) when
    `torch.cuda.amp.common.amp_definitely_not_available()` and refuses bf16 unless `torch.cuda.is_bf16_supported()`,
    both of which ask the driver. The AutocastCUDA kernels themselves are in every build and fake CUDA tensors
    carry the AutocastCUDA dispatch key, so with the two answers faked autocast casts exactly as on a GPU."""
    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)


def fake_mode():
    """Fake tensors; real (CPU) tensors that meet them are converted, as data made on the host meets the GPU."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    return FakeTensorMode(allow_non_fake_inputs=True)


def backward_here(loss: torch.Tensor) -> None:
    """`loss.backward()` without torch's autograd engine: every node of the graph is called on this thread, in
    topological order, with the checks the engine makes on each gradient it passes on (`validate_outputs`: same
    device as the input it is for, else an error; shape reduced to a broadcast input's; cast to its dtype).

    The engine cannot run on fake CUDA tensors without a GPU: before running any node it records the caller's
    current CUDA streams (`GraphTask::stash_current_streams`), which fails with "hasPrimaryContext expects a valid
    device index" on a CUDA build and "Cannot access accelerator device when none is available" on a CPU-only one.
    Calling the nodes runs the same backward formulas: C++ nodes directly, Python ones (custom ops'
    `register_autograd`, autograd.Function) through `apply`, with undefined gradients materialised as zeros."""
    root = loss.grad_fn
    waiting: Counter = Counter()  # node -> edges into it whose gradient has not arrived yet
    stack, seen = [root], {root}
    while stack:
        for node, _ in stack.pop().next_functions:
            if node is not None:
                waiting[node] += 1
                if node not in seen:
                    seen.add(node)
                    stack.append(node)
    inputs = {root: [torch.ones_like(loss)]}
    ready, ran = [root], 0
    with torch.no_grad():
        while ready:
            node = ready.pop()
            grads = inputs.pop(node, None) or [None] * len(node._input_metadata)
            if callable(node):  # a C++ node
                out = node(*grads)
                out = () if out is None else out if isinstance(out, tuple) else (out,)
                assert len(out) == len(node.next_functions), f"{node.name()}: {len(out)} gradients"
                edges = list(zip(node.next_functions, out))
            else:  # a Python node: gradients for its forward's inputs, of which only tensors needing grad have edges
                grads = [torch.zeros(m.shape, dtype=m.dtype, device=m.device) if g is None else g
                         for g, m in zip(grads, node._input_metadata)]
                out = node.apply(*grads)
                out = out if isinstance(out, tuple) else (out,)
                n = len(node.needs_input_grad)  # extra trailing Nones are allowed, as the engine allows them
                assert len(out) == n or (len(out) > n and all(g is None for g in out[n:])), \
                    f"{node.name()}: {len(out)} gradients for {n} inputs"
                out = out[:n]
                wanted = [i for i, need in enumerate(node.needs_input_grad) if need]
                linked = [e for e in node.next_functions if e[0] is not None]
                assert len(wanted) == len(linked), f"{node.name()}: {len(wanted)} inputs need grad, {len(linked)} edges"
                edges = [(e, out[i]) for e, i in zip(linked, wanted)]
            ran += 1
            for index, ((nxt, slot), g) in enumerate(edges):
                if nxt is None:
                    continue
                if g is not None:
                    meta = nxt._input_metadata[slot]
                    if g.device != meta.device:
                        raise RuntimeError(f"Function {node.name()} returned an invalid gradient at index {index} - "
                                           f"expected device {meta.device} but got {g.device}")
                    if tuple(g.shape) != tuple(meta.shape):
                        if torch.broadcast_shapes(tuple(meta.shape), tuple(g.shape)) != tuple(g.shape):
                            raise RuntimeError(f"Function {node.name()} returned an invalid gradient at index {index}"
                                               f" - got {tuple(g.shape)} but expected shape compatible with "
                                               f"{tuple(meta.shape)}")
                        g = g.sum_to_size(meta.shape)
                    g = g.to(meta.dtype)
                    buffer = inputs.setdefault(nxt, [None] * len(nxt._input_metadata))
                    buffer[slot] = g if buffer[slot] is None else buffer[slot] + g
                waiting[nxt] -= 1
                if waiting[nxt] == 0:
                    ready.append(nxt)
    assert ran == len(seen), f"only {ran} of {len(seen)} backward nodes ran"


def _tensors(args, kwargs) -> list[torch.Tensor]:
    return [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]


class FlashContract(TorchDispatchMode):
    """Checks on the GPU-only ops that their fake implementations do not make, and counts every call.

    - flash attention (`torch_attn::_varlen_attn` and its backward, the ops under torch's `varlen_attn`): q, k, v
      of one half-precision dtype, (total, heads, dim) with a contiguous last dimension, dim a multiple of 8 up
      to 256, heads of q a multiple of those of k and v, int32 contiguous cu_seqlens, causal; the backward's
      incoming gradient and saved output in q's dtype, its log-sum-exp float32 (the kernels' own TORCH_CHECKs:
      aten/src/ATen/native/transformers/cuda/flash_attn/flash_api.cpp);
    - pgolf's Triton ops (`pgolf::*`): every tensor on CUDA (a CPU pointer in a Triton launch is no error until it
      is read), and the dtypes the kernels assume;
    - random draws: the generator on the tensor's device ("Expected a 'cuda' device type for generator").
    """

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter = Counter()
        self.dtypes: dict[str, torch.dtype] = {}  # op -> dtype of its first tensor argument (last call)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.name()
        self.calls[name] += 1
        if func.namespace in ("torch_attn", "pgolf"):
            tensors = _tensors(args, kwargs)
            assert all(t.device.type == "cuda" for t in tensors), \
                f"{name}: tensors on {[str(t.device) for t in tensors]}"
            self.dtypes[name] = tensors[0].dtype
            bound = dict(zip((a.name for a in func._schema.arguments), args), **kwargs)
            check = _CONTRACTS.get(name)
            if check is not None:
                check(name, bound)
        generators = [g for g in pytree.tree_leaves((args, kwargs)) if isinstance(g, torch.Generator)]
        if generators:  # drawn into a tensor, or a factory's new one
            devices = ({t.device.type for t in _tensors(args, kwargs)}
                       or {torch.device(kwargs.get("device") or "cpu").type})
            assert all(g.device.type in devices for g in generators), \
                f"{name}: a {generators[0].device.type} generator draws for a tensor on {devices}"
        return func(*args, **kwargs)


def _check_flash_inputs(name: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_q, cu_k) -> None:
    assert q.dtype in HALF and k.dtype == v.dtype == q.dtype, f"{name}: q, k, v of {q.dtype}, {k.dtype}, {v.dtype}"
    assert q.dim() == k.dim() == v.dim() == 3, f"{name}: q, k, v must be (total, heads, dim)"
    assert q.stride(-1) == k.stride(-1) == v.stride(-1) == 1, f"{name}: last dimension not contiguous"
    assert q.size(-1) == k.size(-1) == v.size(-1) and q.size(-1) % 8 == 0 and q.size(-1) <= 256, \
        f"{name}: head dims {q.size(-1)}, {k.size(-1)}, {v.size(-1)}"
    assert k.shape == v.shape and q.size(1) % k.size(1) == 0, f"{name}: heads {q.size(1)} / {k.size(1)}"
    for cu in (cu_q, cu_k):
        assert cu.dtype == torch.int32 and cu.dim() == 1 and cu.is_contiguous(), f"{name}: cu_seqlens {cu.dtype}"


def _check_varlen(name: str, a: dict) -> None:
    _check_flash_inputs(name, a["query"], a["key"], a["value"], a["cu_seq_q"], a["cu_seq_k"])
    assert isinstance(a["max_q"], int) and isinstance(a["max_k"], int), f"{name}: max lengths must be ints"
    assert a.get("is_causal") is True, f"{name}: pgolf's attention is causal"


def _check_varlen_backward(name: str, a: dict) -> None:
    _check_flash_inputs(name, a["query"], a["key"], a["value"], a["cu_seq_q"], a["cu_seq_k"])
    q = a["query"]
    assert a["grad_out"].dtype == a["out"].dtype == q.dtype, f"{name}: grad_out {a['grad_out'].dtype}, q {q.dtype}"
    assert a["grad_out"].stride(-1) == 1 and a["lse"].dtype == torch.float32, f"{name}: grad_out / lse"


def _check_softcap_ce(name: str, a: dict) -> None:
    z, t = a["z"], a["targets"]
    assert z.dim() == 2 and z.is_floating_point() and t.dtype == torch.int64 and t.shape == z.shape[:1], \
        f"{name}: z {z.dtype} {tuple(z.shape)}, targets {t.dtype} {tuple(t.shape)}"
    if "lse" in a:
        assert a["lse"].dtype == torch.float32 and a["lse"].shape == z.shape[:1], f"{name}: lse"


def _check_leaky_relu2_up(name: str, a: dict) -> None:
    x, w = a["x"], a["w"]
    assert x.dim() == w.dim() == 2 and x.size(1) == w.size(1), f"{name}: x {tuple(x.shape)}, w {tuple(w.shape)}"
    assert x.dtype == w.dtype, f"{name}: tl.dot needs one dtype, got x {x.dtype} and w {w.dtype}"


_CONTRACTS = {
    "torch_attn::_varlen_attn": _check_varlen,
    "torch_attn::_varlen_attn_backward": _check_varlen_backward,
    "pgolf::softcap_ce": _check_softcap_ce,
    "pgolf::softcap_ce_backward": _check_softcap_ce,
    "pgolf::leaky_relu2_up": _check_leaky_relu2_up,
}


def _record_config():
    from pgolf.options import resolve_config

    return resolve_config("record", RECORD_AT_TEST_SIZE, environ={})


def _packed_batch(vocab: int, tokens: int, docs: int, bos: int, seed: int = 0) -> torch.Tensor:
    """One packed row of `tokens` + 1 ids with `docs` BOS tokens, made on the host as the loader makes it."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (1, tokens + 1), generator=g)
    ids[0, torch.randint(0, tokens + 1, (docs,), generator=g)] = bos
    return ids


def _on_cuda(named, dtypes=None) -> None:
    for name, t in named:
        assert isinstance(t, torch.Tensor) and t.device.type == "cuda", f"{name} on {getattr(t, 'device', t)}"
        if dtypes is not None:
            assert t.dtype == dtypes[name], f"{name}: {t.dtype}, expected {dtypes[name]}"


# ------------------------------------------------------------------------------------------------------ the tests

def test_record_training_step_traces_on_fake_cuda(monkeypatch, cuda_autocast):
    """The trainer's CUDA step on the record's stack (Trainer.__init__'s setup, Trainer._step's order): every op's
    device and dtype rules, the real varlen_attn signature and checks, the kernels' fakes (when triton imports, as
    `train.kernels=auto` decides), the backward and one optimizer + EMA step."""
    from pgolf.data.segments import document_segments
    from pgolf.errors import choose
    from pgolf.model.gpt import GPT
    from pgolf.model.precision import body_dtype, cast_body
    from pgolf.optim.ema import WEIGHT_AVERAGES, weight_average_kind
    from pgolf.optim.groups import build_optimizers
    from pgolf.runtime import autocast_for

    if attention.varlen_attention is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    monkeypatch.setattr(attention, "fa3_varlen", None)  # torch's varlen_attn (FA3's call: test_document_attention)
    cfg = _record_config()
    seq_len = cfg.train.train_seq_len
    ids = _packed_batch(cfg.model.vocab_size, 4 * seq_len, docs=9, bos=cfg.model.bos_id)
    x, y = ids[:, :-1], ids[:, 1:]
    segments = document_segments(x, cfg.model.bos_id, seq_len)  # on the host, as the loader does
    model = GPT(cfg.model)
    contract = FlashContract()
    with fake_mode(), contract:
        model = model.to(CUDA)
        cast = cast_body(model, body_dtype(cfg.train.body_dtype, CUDA))
        use_kernels = kernels.wanted(cfg.train.kernels, CUDA)
        model.use_kernels(use_kernels)
        optimizers = build_optimizers(model, cfg.optim)
        ema = choose(WEIGHT_AVERAGES, weight_average_kind(cfg.optim), "weight average")(model, cfg.optim)
        x, y, segments = x.to(CUDA, non_blocking=True), y.to(CUDA, non_blocking=True), segments.to(CUDA)
        with autocast_for(CUDA):
            assert torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") == torch.bfloat16
            loss = model(x, y, segments=segments)
        backward_here(loss)
        grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}  # AsymLogit caps: untrained
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip_norm)
        for opt in optimizers:
            opt.step()
        ema.update(model)

    assert loss.device.type == "cuda" and loss.dtype == torch.float32 and loss.shape == ()
    assert cast == ["tok_emb.weight"] and model.tok_emb.weight.dtype == torch.bfloat16
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    _on_cuda(grads.items(), dtypes)  # a gradient for every trained parameter, on its device, in its dtype
    assert all(grads[n].shape == p.shape for n, p in model.named_parameters() if p.requires_grad)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == {"logit_cap_pos", "logit_cap_neg"}
    _on_cuda(model.named_parameters(), dtypes)
    _on_cuda(((f"{type(o).__name__}.{k}", v) for o in optimizers for s in o.state.values() for k, v in s.items()))
    _on_cuda(ema.shadow.items())
    applications = model.slots  # every block application attends once, through the flash kernel
    assert contract.calls["torch_attn::_varlen_attn"] == applications
    assert contract.calls["torch_attn::_varlen_attn_backward"] == applications
    fused = {"pgolf::softcap_ce": 1, "pgolf::softcap_ce_backward": 1, "pgolf::leaky_relu2_up": applications}
    for op, n in fused.items():
        assert contract.calls[op] == (n if use_kernels else 0), op
        assert contract.dtypes.get(op, torch.bfloat16) == torch.bfloat16, op  # autocast's matmul outputs
    assert not any("scaled_dot_product" in op for op in contract.calls)  # no padded fallback on CUDA


def test_phased_ttt_scores_and_adapts_on_fake_cuda(cuda_autocast):
    """Phased LoRA TTT as the record evaluates on CUDA: `run` up to its first scored chunk (schedule, adapters on
    the device drawn from a CPU generator, fused AdamW, the window and target index tensors built on the host and
    moved, the adapted forward under autocast), then one adaptation step on that forward: the loss
    `_chunk_step` takes, backward into the adapters only, the AdamW step. (`_chunk_step` itself reads data:
    its count check and masked scatter need values, which fake tensors do not have.)"""
    from pgolf.eval.ttt_lora import PhasedLoRAMode
    from pgolf.model.gpt import GPT

    cfg = _record_config()
    settings = cfg.ttt
    mode = PhasedLoRAMode(64, settings, cfg.model.bos_id, cfg.eval.compile)
    rng = np.random.default_rng(0)
    docs = [np.concatenate(([cfg.model.bos_id], rng.integers(2, cfg.model.vocab_size, n))) for n in (70, 25, 40, 9, 33)]
    tokens = np.concatenate(docs).astype(np.uint16)
    model = GPT(cfg.model).eval()  # evaluation loads float32 weights (no cast_body, no kernels)
    contract = FlashContract()
    with fake_mode(), contract:
        model = model.to(CUDA)
        chunks = mode.run(model, tokens, device=CUDA, batch_tokens=4096)
        chunk = next(chunks)
        _on_cuda([("positions", chunk.positions), ("targets", chunk.targets), ("log_probs", chunk.log_probs),
                  ("nats", chunk.nats), ("mask", chunk.mask)])
        rows, width = settings.batch_docs, 64
        assert chunk.log_probs.shape == (rows, settings.chunk, cfg.model.vocab_size)
        assert chunk.log_probs.dtype == torch.float32 and chunk.mask.dtype == torch.bool
        # One adaptation step, as `_chunk_step` takes it on the forward it scored with.
        x = torch.randint(0, cfg.model.vocab_size, (rows, width)).to(CUDA)
        cols = torch.arange(settings.chunk, device=CUDA).expand(rows, -1)
        logp = mode._forward(x, cols)
        train_mask = torch.ones(rows, settings.chunk, dtype=torch.bool, device=CUDA)
        targets = torch.zeros(train_mask.shape, dtype=torch.int64, device=CUDA)
        nats = -logp.gather(-1, targets[..., None]).squeeze(-1)
        per_doc = (nats * train_mask).sum(1) / train_mask.sum(1).clamp(min=1)
        mode.opt.zero_grad(set_to_none=True)
        backward_here(per_doc.sum())
        grads = {n: p.grad for n, p in mode.lora.named_parameters()}
        mode.opt.step()
        chunks.close()

    assert logp.dtype == torch.float32 and logp.shape == (rows, settings.chunk, cfg.model.vocab_size)
    assert {k.split("_")[0] for k in mode.lora.a} == set(mode.targets)
    assert len(mode.lora.a) == (len(mode.targets) - 1) * model.slots + 1  # per virtual layer, one head
    _on_cuda(grads.items(), {n: torch.float32 for n in grads})
    _on_cuda(((k, v) for s in mode.opt.state.values() for k, v in s.items()))
    assert all(p.grad is None for p in model.parameters())  # the base weights stay frozen while adapting
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("logit_cap_"))  # `run` gives
    # requires_grad back (the AsymLogit caps are never trained by LoRA TTT)
    assert contract.calls["aten::uniform_"] > 0  # the adapters' draw went through the generator check


def test_gptq_calibration_on_train_batches_traces_on_fake_cuda(monkeypatch, cuda_autocast):
    """The record's GPTQ calibration right after training (`calibrate`, quant.calib=train) on the trained
    CUDA model: packed batches through `hidden` with segments under autocast, Hessians accumulated on the GPU in
    float32 by forward pre-hooks, then handed back on the host."""
    from pgolf.data.segments import document_segments
    from pgolf.model.gpt import GPT
    from pgolf.model.precision import body_dtype, cast_body
    from pgolf.runtime import DistContext, PhaseClock
    from pgolf.train.calibration import calibrate, calibrates_on_train

    if attention.varlen_attention is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    monkeypatch.setattr(attention, "fa3_varlen", None)
    cfg = _record_config()
    assert calibrates_on_train(cfg.quant)
    cfg.quant.calib_batches = 1
    bos, seq_len = cfg.model.bos_id, cfg.train.train_seq_len

    ids = _packed_batch(cfg.model.vocab_size, 2 * seq_len, docs=5, bos=bos)
    batch = (ids[:, :-1], ids[:, 1:], document_segments(ids[:, :-1], bos, seq_len))  # made on the host

    class PackedLoader:  # the packed loader's batch: one row and its segments
        def next_batch(self, tokens, seq_len_, accum):
            return batch

    class Log:
        def line(self, text: str) -> None:
            pass

    model = GPT(cfg.model)
    contract = FlashContract()
    with fake_mode(), contract:
        model = model.to(CUDA)
        cast_body(model, body_dtype(cfg.train.body_dtype, CUDA))
        model.use_kernels(kernels.wanted(cfg.train.kernels, CUDA))
        calib = calibrate(model, PackedLoader(), cfg, DistContext(0, 1, 0, CUDA), PhaseClock(), Log(), 0.0)
        hessians, report = calib.hessians, calib.report
    assert hessians and report["matrices"] == len(hessians)
    for name, h in hessians.items():
        assert h.device.type == "cpu" and h.dtype == torch.float32 and h.dim() == 2 and h.size(0) == h.size(1), name
    assert contract.calls["torch_attn::_varlen_attn"] == model.slots  # document-isolated, through the kernel
    assert contract.calls["aten::addmm_"] > 0 and model.training


# -------------------------------------------------------------------- the harness catches what it is there for

def _varlen_call(dtype=torch.bfloat16, cu_dtype=torch.int32):
    q = torch.zeros(64, 4, 64, dtype=dtype, device=CUDA)
    k = v = torch.zeros(64, 2, 64, dtype=dtype, device=CUDA)
    cu = torch.tensor([0, 30, 64], dtype=cu_dtype).to(CUDA)
    return attention.varlen_attention(q, k, v, cu, cu, 34, 34, **attention.varlen_keywords(gqa=True))


def _fused_loss_with_host_targets():
    if kernels.triton is None:
        pytest.skip("triton does not import")
    return kernels.softcap_cross_entropy(torch.zeros(8, 32, device=CUDA), torch.zeros(8, dtype=torch.int64), 30.0)


class _GradToHost(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g.cpu()


@pytest.mark.parametrize("mistake, error", [
    (lambda: _varlen_call(dtype=torch.float32), "q, k, v of torch.float32"),
    (lambda: _varlen_call(cu_dtype=torch.int64), "cu_seqlens torch.int64"),
    (_fused_loss_with_host_targets, "tensors on"),
    (lambda: torch.empty(4, device=CUDA).uniform_(generator=torch.Generator()), "a cpu generator draws"),
    (lambda: torch.zeros(4, device=CUDA) + torch.zeros(4), "device"),
    (lambda: backward_here(_GradToHost.apply(torch.zeros(4, device=CUDA, requires_grad=True)).sum()),
     "expected device cuda:0 but got cpu"),
], ids=["float32-into-flash", "int64-cu-seqlens", "host-targets-into-kernel", "cpu-generator-cuda-draw",
        "host-tensor-in-cuda-op", "host-gradient-for-cuda-input"])
def test_the_harness_fails_on_cuda_mistakes(mistake, error):
    """Each mistake here passes on the CPU and fails on a GPU; under fake CUDA with the contract it must fail."""
    if attention.varlen_attention is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    with fake_mode(), FlashContract(), pytest.raises((AssertionError, RuntimeError), match=error):
        mistake()


def test_real_varlen_attn_runs_with_the_installed_signature():
    """The installed torch's varlen_attn (wrapper, custom op, fake) takes the keywords pgolf passes, and returns
    q's shape and dtype; GQA inputs are accepted (torch 2.13 refuses them without enable_gqa)."""
    if attention.varlen_attention is None:
        pytest.skip("this torch has no torch.nn.attention.varlen")
    contract = FlashContract()
    with fake_mode(), contract:
        y = _varlen_call()
    assert y.shape == (64, 4, 64) and y.dtype == torch.bfloat16 and y.device.type == "cuda"
    assert contract.calls["torch_attn::_varlen_attn"] == 1
