"""Every record technique of the one model, checked THROUGH THE MODEL against a spelled-out reference.

The model's output projections start at zero, so at initialisation every block is the identity and most wiring
mistakes are invisible. Here every parameter is first moved off its init (matrices, zero-init projections and tables
get random values; control tensors such as resid_mix, skip weights and gates, q_gain, lane parameters and gate
scalars get random offsets), the model runs in float64, and `GPT.hidden` and `GPT.forward` are compared with the
reference below, written from the technique descriptions in docs/techniques.md, not from pgolf's modules: its own
RMSNorm, RoPE as a complex rotation (partial, NTK-scaled), GQA by repeating K/V heads, attention as an explicit
masked softmax, XSA as a projection, and its own BigramHash, SmearGate, value embeddings, value residual, gates, U-Net
skips over the virtual (looped) layer order and softcap.

Each case also checks that the reference with the technique switched off gives a different answer on the same
weights, so a comparison cannot pass because the technique has no effect at these weights.

The two-lane parallel residual is spelled out as the 1.0611 record wires it (PR #1529 as used by PR #1855): both
lanes start as the stream entering the first two-lane layer, before its U-Net skip; skips enter lane 0 only;
attention reads norm(resid_mix(lane 0, x0)) while lane 0 itself carries on unmixed; the MLP reads norm(lane 1); each
lane keeps rho times itself plus P-weighted attention and MLP outputs; the final state is the lanes' mean.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from pgolf.config import ModelConfig
from pgolf.model.gpt import GPT
from pgolf.model.layers import CastedLinear

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, DIM, HEADS, KV_HEADS, LAYERS = 128, 64, 4, 2, 4
HEAD_DIM = DIM // HEADS
BOS = 1


def _cfg(**kw) -> ModelConfig:
    base = dict(vocab_size=VOCAB, num_layers=LAYERS, model_dim=DIM, num_heads=HEADS, num_kv_heads=KV_HEADS,
                bos_id=BOS)
    return ModelConfig(**{**base, **kw})


def randomised(cfg: ModelConfig, seed: int = 0) -> GPT:
    """The model with every parameter moved off its init, in float64 (eval mode)."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    controls = ("resid_mix", "skip_weights", "skip_gates", "lane_")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "tok_emb.weight":
                p.normal_(0, 1.0)
            elif p.ndim == 2 and not any(c in name for c in controls):
                p.normal_(0, p.size(1) ** -0.5)     # matrices, tables, gate weights: zero-init ones included
            else:
                p.add_(0.5 * torch.randn_like(p))   # per-channel and scalar control tensors
    return model.double().eval()


def token_ids(t: int = 16, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (2, t), generator=g)
    ids[0, 6] = ids[1, 9] = BOS  # document starts inside the rows (SmearGate's BOS fix)
    return ids


# ----------------------------------------------------------------------------------------------------------------
# The reference
# ----------------------------------------------------------------------------------------------------------------

def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + torch.finfo(x.dtype).eps)


def _rope(x: torch.Tensor, base: float, dims: int, ntk_len: int) -> torch.Tensor:
    """Rotate the first `dims` dims of x [B, H, T, D] (dim i paired with i + dims/2, read as a complex number) by
    -t * base'^(-2i/dims); base' = base * (T / ntk_len)^(dims / (dims - 2)) when T > ntk_len > 0 (NTK-aware)."""
    t = x.size(-2)
    if ntk_len and t > ntk_len and dims > 2:
        base = base * (t / ntk_len) ** (dims / (dims - 2))
    theta = base ** (-torch.arange(0, dims, 2, dtype=torch.float64) / dims)
    angle = torch.arange(t, dtype=torch.float64)[:, None] * theta
    half = dims // 2
    z = torch.complex(x[..., :half], x[..., half:dims]) * torch.polar(torch.ones_like(angle), -angle)
    return torch.cat((z.real, z.imag, x[..., dims:]), dim=-1)


def _bigram(model: GPT, ids: torch.Tensor, rows: int) -> torch.Tensor:
    idx = torch.full_like(ids, rows - 1)
    for b in range(ids.size(0)):
        for i in range(1, ids.size(1)):
            cur, prev = int(ids[b, i]), int(ids[b, i - 1])
            idx[b, i] = ((36313 * cur) ^ (27191 * prev)) % (rows - 1)
    return model.bigram.scale * (model.bigram.table.weight[idx] @ model.bigram.proj.weight.T)


def _smear(model: GPT, x: torch.Tensor, ids: torch.Tensor, bos: int) -> torch.Tensor:
    out = x.clone()
    w, lam = model.smear.smear_gate, model.smear.smear_lambda
    for t in range(1, x.size(1)):
        gate = torch.sigmoid(x[:, t, :12] @ w)[:, None]
        keep = (ids[:, t] != bos).to(x.dtype)[:, None]
        out[:, t] = x[:, t] + lam * gate * x[:, t - 1] * keep
    return out


def _gate(attn, x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    """Per-head gate values [B, T, H]."""
    w = attn.gate.attn_gate_w
    if cfg.attn_gate == "gated":
        return torch.sigmoid(x @ w.T)
    z = x[..., :12] @ w.T
    return 2 * torch.sigmoid(z) if cfg.attn_gate == "out" else torch.sigmoid(cfg.attn_gate_scale * z)


def _attention(attn, layer: int, x: torch.Tensor, cfg: ModelConfig, ve, state: dict) -> torch.Tensor:
    b, t, _ = x.shape
    v_flat = x @ attn.c_v.weight.T
    if ve is not None:
        v_flat = v_flat + ve
    if cfg.value_residual:
        if "v_first" not in state:
            state["v_first"] = v_flat
        else:
            v_flat = v_flat + torch.sigmoid(attn.vres_alpha) * state["v_first"]
    q = (x @ attn.c_q.weight.T).view(b, t, HEADS, HEAD_DIM).transpose(1, 2)
    k = (x @ attn.c_k.weight.T).view(b, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
    v = v_flat.view(b, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
    dims = cfg.rope_dims or HEAD_DIM
    q = _rope(_rms(q), cfg.rope_base, dims, cfg.rope_ntk_train_len) * attn.q_gain[None, :, None, None]
    k = _rope(_rms(k), cfg.rope_base, dims, cfg.rope_ntk_train_len)
    k, v = k.repeat_interleave(HEADS // KV_HEADS, 1), v.repeat_interleave(HEADS // KV_HEADS, 1)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(HEAD_DIM)).masked_fill(
        torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
    y = scores.softmax(-1) @ v                                            # [B, H, T, hd]
    if layer >= cfg.num_layers - cfg.xsa_last_n:                           # XSA: drop the part along own value
        u = v / v.norm(dim=-1, keepdim=True)
        y = y - (y * u).sum(-1, keepdim=True) * u
    if cfg.attn_gate != "none":
        y = y * _gate(attn, x, cfg).transpose(1, 2)[..., None]
    return y.transpose(1, 2).reshape(b, t, DIM) @ attn.proj.weight.T


def _mlp(mlp, x: torch.Tensor, cfg: ModelConfig) -> torch.Tensor:
    h = x @ mlp.fc.weight.T
    slope = 0.5 if cfg.mlp_activation == "leaky_relu2" else 0.0
    return torch.where(h > 0, h, slope * h).square() @ mlp.proj.weight.T


def _block(model: GPT, layer: int, x, x0, cfg: ModelConfig, ve, state: dict) -> torch.Tensor:
    blk = model.blocks[layer]
    scale = 1 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0
    x = blk.resid_mix[0] * x + blk.resid_mix[1] * x0
    ve_here = blk.ve_layer_scale * ve if layer >= cfg.num_layers - cfg.value_embed_last_n else None
    a = blk.attn_scale * _attention(blk.attn, layer, scale * _rms(x), cfg, ve_here, state)
    if cfg.parallel_mode == "gptj" and layer >= cfg.parallel_start:
        return x + a + blk.mlp_scale * _mlp(blk.mlp, scale * _rms(x), cfg)
    x = x + a
    return x + blk.mlp_scale * _mlp(blk.mlp, scale * _rms(x), cfg)


def _two_lane_block(model: GPT, layer: int, lane0, lane1, x0, cfg: ModelConfig, ve, state: dict):
    """The record's parallel block: attention reads the mixed lane 0, the MLP reads lane 1, both lanes mix both."""
    blk = model.blocks[layer]
    scale = 1 / math.sqrt(layer + 1) if cfg.ln_scale else 1.0
    read = blk.resid_mix[0] * lane0 + blk.resid_mix[1] * x0
    ve_here = blk.ve_layer_scale * ve if layer >= cfg.num_layers - cfg.value_embed_last_n else None
    a = blk.attn_scale * _attention(blk.attn, layer, scale * _rms(read), cfg, ve_here, state)
    m = blk.mlp_scale * _mlp(blk.mlp, scale * _rms(lane1), cfg)
    (rho_a, rho_m), p = blk.lane_rho, blk.lane_mix
    return rho_a * lane0 + p[0, 0] * a + p[1, 0] * m, rho_m * lane1 + p[0, 1] * a + p[1, 1] * m


def virtual_order(cfg: ModelConfig, looping: bool) -> list[int]:
    """Layers loop_start..loop_end run num_loops more times right after their first pass."""
    order = list(range(cfg.num_layers))
    if looping and cfg.num_loops > 0:
        again = list(range(cfg.loop_start, cfg.loop_end + 1)) * cfg.num_loops
        order = order[:cfg.loop_end + 1] + again + order[cfg.loop_end + 1:]
    return order


def reference_hidden(model: GPT, ids: torch.Tensor, cfg: ModelConfig | None = None) -> torch.Tensor:
    """Final normalised hidden states of `model`'s weights wired as `cfg` says (default: the model's config)."""
    cfg = cfg or model.cfg
    x = model.tok_emb.weight[ids]
    if cfg.bigram_rows:
        x = x + _bigram(model, ids, cfg.bigram_rows)
    if cfg.smear_gate:
        x = _smear(model, x, ids, cfg.bos_id)
    x = x0 = _rms(x)
    ve = None
    if cfg.value_embed_last_n:
        ve = model.value_embed_scale * (model.value_embed.weight[ids] @ model.value_embed_proj.weight.T)
    order = virtual_order(cfg, model.looping)
    n_enc = len(order) // 2
    stack, state, lane1 = [], {}, None
    for pos, layer in enumerate(order):
        two_lane = cfg.parallel_mode == "two_lane" and layer >= cfg.parallel_start
        if two_lane and lane1 is None:
            lane1 = x                              # both lanes start here, before this layer's skip
        if pos >= n_enc and stack:                 # decoder: pop the newest skip (U-Net, LIFO) into lane 0
            j = pos - n_enc
            s = model.skip_weights[j] * stack.pop()
            x = s + torch.sigmoid(model.skip_gates[j]) * (x - s) if cfg.skip_gates else x + s
        if two_lane:
            x, lane1 = _two_lane_block(model, layer, x, lane1, x0, cfg, ve, state)
        else:
            x = _block(model, layer, x, x0, cfg, ve, state)
        if pos < n_enc:
            stack.append(x)
    if lane1 is not None:
        x = 0.5 * (x + lane1)
    return _rms(x)


def reference_logits(model: GPT, ids: torch.Tensor, cfg: ModelConfig | None = None) -> torch.Tensor:
    cfg = cfg or model.cfg
    z = reference_hidden(model, ids, cfg) @ model.tok_emb.weight.T
    c = cfg.logit_softcap
    return c * torch.tanh(z / c) if c > 0 else z


# ----------------------------------------------------------------------------------------------------------------
# The model against the reference, one technique at a time and all together
# ----------------------------------------------------------------------------------------------------------------

# The record's wiring at toy size: 7 layers, layers 2-3 looped twice, two lanes from layer 5 (all in the decoder,
# after the loops), with the record's other model options.
RECORD_SHAPE = {"num_layers": 7, "num_loops": 2, "loop_start": 2, "loop_end": 3, "parallel_mode": "two_lane",
                "parallel_start": 5, "mlp_activation": "leaky_relu2", "rope_dims": 8, "ln_scale": True,
                "xsa_last_n": 7, "skip_gates": True, "smear_gate": True, "attn_gate": "sparse",
                "attn_gate_scale": 0.5, "qk_gain_init": 5.0}

# name: (options, the same options with the technique switched off, for the "it has an effect" guard)
CASES = {
    "baseline": ({}, None),
    "softcap": ({"logit_softcap": 10.0}, {"logit_softcap": 0.0}),
    "leaky_relu2": ({"mlp_activation": "leaky_relu2"}, {"mlp_activation": "relu2"}),
    "partial_rope": ({"rope_dims": 8}, {"rope_dims": 0}),
    "ln_scale": ({"ln_scale": True}, {"ln_scale": False}),
    "xsa": ({"xsa_last_n": 2}, {"xsa_last_n": 0}),
    "skip_gates": ({"skip_gates": True}, {"skip_gates": False}),
    "smear_gate": ({"smear_gate": True}, {"smear_gate": False}),
    "smear_gate_no_bos": ({"smear_gate": True}, {"smear_gate": True, "bos_id": -1}),  # the BOS fix matters
    "bigram": ({"bigram_rows": 64, "bigram_dim": 16}, {"bigram_rows": 0}),
    "value_embed": ({"value_embed_last_n": 2, "value_embed_dim": 16}, {"value_embed_last_n": 0}),
    "attn_gate_out": ({"attn_gate": "out"}, {"attn_gate": "none"}),
    "attn_gate_gated": ({"attn_gate": "gated"}, {"attn_gate": "none"}),
    "attn_gate_sparse": ({"attn_gate": "sparse", "attn_gate_scale": 3.0}, {"attn_gate_scale": 1.0}),  # the scale acts
    "gptj": ({"parallel_mode": "gptj", "parallel_start": 1}, {"parallel_mode": "none"}),
    "recurrence": ({"num_layers": 5, "num_loops": 2, "loop_start": 1, "loop_end": 2}, {"num_loops": 0}),
    "value_residual": ({"value_residual": True}, {"value_residual": False}),
    "ntk_rope": ({"rope_ntk_train_len": 8}, {"rope_ntk_train_len": 0}),
    "ntk_partial_rope": ({"rope_ntk_train_len": 8, "rope_dims": 8}, {"rope_ntk_train_len": 0, "rope_dims": 8}),
    "two_lane": ({"parallel_mode": "two_lane", "parallel_start": 2}, {"parallel_mode": "none"}),
    "two_lane_in_encoder": ({"parallel_mode": "two_lane", "parallel_start": 1}, {"parallel_mode": "gptj"}),
    "record_shape": (RECORD_SHAPE, {**RECORD_SHAPE, "parallel_mode": "gptj"}),
    "all_but_two_lane": ({"mlp_activation": "leaky_relu2", "rope_dims": 8, "ln_scale": True, "xsa_last_n": 3,
                          "skip_gates": True, "smear_gate": True, "bigram_rows": 64, "bigram_dim": 16,
                          "value_embed_last_n": 2, "value_embed_dim": 16, "attn_gate": "sparse",
                          "attn_gate_scale": 2.0, "parallel_mode": "gptj", "parallel_start": 3, "num_layers": 6,
                          "num_loops": 1, "loop_start": 2, "loop_end": 3, "value_residual": True,
                          "rope_ntk_train_len": 8, "qk_gain_init": 4.0}, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_model_matches_the_reference(name):
    options, off = CASES[name]
    cfg = _cfg(**options)
    model = randomised(cfg)
    ids = token_ids()
    with torch.no_grad():
        hidden, logits = model.hidden(ids), model(ids)
        want_hidden, want_logits = reference_hidden(model, ids), reference_logits(model, ids)
        assert torch.allclose(hidden, want_hidden, rtol=1e-6, atol=1e-6), "hidden states differ"
        assert torch.allclose(logits, want_logits.float(), rtol=1e-5, atol=1e-5), "logits differ"
        assert want_logits.std() > 1.0  # not a comparison of two near-constant tensors
        if off is not None:
            without = reference_logits(model, ids, dataclasses.replace(cfg, **off))
            assert not torch.allclose(without, want_logits, rtol=1e-3, atol=1e-3), "technique has no effect here"


def test_recurrence_reference_follows_the_looping_switch():
    """With `looping` off (early training) the same looped model runs the plain order and uses fewer skips."""
    cfg = _cfg(num_layers=5, num_loops=2, loop_start=1, loop_end=2)
    model = randomised(cfg)
    ids = token_ids()
    with torch.no_grad():
        looped = model(ids)
        model.set_looping(False)
        plain = model(ids)
        assert torch.allclose(plain, reference_logits(model, ids).float(), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(looped, plain, atol=1e-3)


def test_leaky_relu2_mlp_module_against_the_formula():
    """The MLP module itself: LeakyReLU(0.5)^2 written out, and relu^2 (slope 0) on the same weights differs."""
    torch.manual_seed(0)
    leaky, plain = randomised(_cfg(mlp_activation="leaky_relu2")), randomised(_cfg())
    mlp, relu_mlp = leaky.blocks[1].mlp, plain.blocks[1].mlp
    relu_mlp.load_state_dict(mlp.state_dict())
    x = torch.randn(3, 5, DIM, dtype=torch.float64)
    h = x @ mlp.fc.weight.T
    assert (h < 0).any() and (h > 0).any()
    with torch.no_grad():
        want = torch.where(h > 0, h * h, 0.25 * h * h) @ mlp.proj.weight.T
        assert torch.allclose(mlp(x), want, atol=1e-10)
        assert torch.allclose(relu_mlp(x), torch.where(h > 0, h * h, 0 * h) @ mlp.proj.weight.T, atol=1e-10)
        assert not torch.allclose(mlp(x), relu_mlp(x), atol=1e-3)


def test_qk_gain_is_read_from_the_model():
    """q_gain is a learnt per-head tensor (init qk_gain_init): changing one head's gain changes the output."""
    model = randomised(_cfg(qk_gain_init=4.0))
    assert torch.all(GPT(_cfg(qk_gain_init=4.0)).blocks[0].attn.q_gain == 4.0)
    ids = token_ids()
    with torch.no_grad():
        before = model(ids)
        model.blocks[0].attn.q_gain[2] *= 3
        after = model(ids)
        assert torch.allclose(after, reference_logits(model, ids).float(), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(before, after, atol=1e-3)


# ----------------------------------------------------------------------------------------------------------------
# Orthogonal init (an initialisation, so a property of the weights rather than of the forward)
# ----------------------------------------------------------------------------------------------------------------

def test_orthogonal_init_covers_every_non_zero_block_matrix():
    torch.manual_seed(0)
    model = GPT(_cfg(ortho_init=True, value_embed_last_n=1, attn_gate="gated"))
    checked = 0
    for name, module in model.blocks.named_modules():
        if not isinstance(module, CastedLinear):
            continue
        p = module.weight
        if name.endswith("proj"):
            assert not p.any(), name                                    # zero-init projections stay zero
            continue
        gram = p @ p.T if p.size(0) <= p.size(1) else p.T @ p              # orthonormal rows or columns
        assert torch.allclose(gram, torch.eye(gram.size(0)), atol=1e-5), name
        checked += 1
    assert checked == 4 * LAYERS                                        # c_q, c_k, c_v and mlp.fc of each block
    plain = GPT(_cfg()).blocks[0].attn.c_q.weight
    assert not torch.allclose(plain @ plain.T, torch.eye(DIM), atol=0.1)  # the default init is not orthogonal


# ----------------------------------------------------------------------------------------------------------------
# The record's function with looping off (early training) as well as on
# ----------------------------------------------------------------------------------------------------------------

def test_record_wiring_matches_the_reference_with_looping_on_and_off():
    model = randomised(_cfg(**RECORD_SHAPE))
    ids = token_ids()
    outputs = []
    with torch.no_grad():
        for looping in (True, False):
            model.set_looping(looping)
            hidden = model.hidden(ids)
            assert torch.allclose(hidden, reference_hidden(model, ids), rtol=1e-6, atol=1e-6), looping
            assert torch.allclose(model(ids), reference_logits(model, ids).float(), rtol=1e-5, atol=1e-5), looping
            outputs.append(hidden)
    assert not torch.allclose(*outputs, atol=1e-3)


def test_two_lane_lane_parameters_all_act():
    """Every entry of lane_rho and lane_mix of a two-lane block changes the output (none is dead)."""
    ids = token_ids()
    model = randomised(_cfg(parallel_mode="two_lane", parallel_start=2))
    with torch.no_grad():
        base = model(ids)
        blk = model.blocks[2]
        for p in (blk.lane_rho, blk.lane_mix):
            for k in range(p.numel()):
                p.view(-1)[k] += 0.5
                assert not torch.allclose(model(ids), base, atol=1e-4), (p.shape, k)
                p.view(-1)[k] -= 0.5
