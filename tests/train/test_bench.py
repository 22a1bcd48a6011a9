"""`pgolf bench`: its figures exist, are consistent with each other, and reach a readable table (the CPU named by its
model), JSON and a markdown row; the FLOP count runs on shapes alone, equals a real eager step's count, and counts
packed attention per segment."""

from __future__ import annotations

import json
import platform
import resource

import numpy as np
import pytest
import torch
from torch.utils import flop_counter

from pgolf.cli import main
from pgolf.data.segments import document_segments
from pgolf.model.gpt import GPT
from pgolf.options import resolve_config
from pgolf.train.bench import (attention_flops, count_step_flops, counting_model, cpu_model, device_name, markdown_row,
                               synthetic_tokens)
from tests.conftest import TINY_MODEL_SETS

pytestmark = pytest.mark.usefixtures("one_thread")

SETS = [a for s in TINY_MODEL_SETS for a in ("--set", s)]
# Record options on the tiny model: looping (2 layers, layer 0 looped once: 3 virtual layers), two lanes, XSA,
# SmearGate, sparse gates, value embeddings and residual, BigramHash, skip gates, orthogonal init, partial RoPE.
RECORD_OPTIONS = ["model.num_loops=1", "model.loop_start=0", "model.loop_end=0", "model.parallel_mode=two_lane",
                  "model.parallel_start=1", "model.xsa_last_n=2", "model.smear_gate=true", "model.attn_gate=sparse",
                  "model.value_embed_last_n=1", "model.value_embed_dim=8", "model.value_residual=true",
                  "model.bigram_rows=64", "model.bigram_dim=8", "model.skip_gates=true", "model.ortho_init=true",
                  "model.ln_scale=true", "model.rope_dims=8"]


def test_bench_reports_training_eval_and_ttt(tmp_path, capsys):
    out, md = tmp_path / "bench.json", tmp_path / "BENCH.md"
    sets = SETS + ["--set", "train.loader=packed", "--set", "eval.mode=lora-ttt", "--set", "ttt.batch_docs=4",
                   "--set", "ttt.chains=1", "--set", "ttt.chunk=16"]
    code = main(["bench", "--preset", "cpu-smoke", *sets, "--steps", "2", "--warmup", "1", "--eval-tokens", "1024",
                 "--device", "cpu", "--json", str(out), "--markdown", str(md)])
    assert code == 0
    result = json.loads(out.read_text())
    captured = capsys.readouterr()
    table = captured.out.strip().splitlines()  # --json FILE: the file holds the JSON, stdout the readable table
    assert table[0].startswith(f"bench cpu-smoke on {cpu_model()} (torch {torch.__version__}")
    assert f"{result['train']['tokens_per_s']:,.0f} tokens/s" in captured.out
    assert f"{result['eval']['ttt_tokens_per_s']:,.0f} tokens/s" in captured.out
    assert [line.split()[0] for line in table[1:]] == ["training:", "warm-up", "step", "throughput", "model",
                                                       "achieved", "MFU", "peak", "eval:", "flat", "lora-ttt"]
    err = captured.err.splitlines()
    starts = [line for line in err if line.startswith("bench: ") and " started " in line]
    assert [line.split()[1] for line in starts] == ["training", "eval"]
    assert json.loads(err[err.index(starts[0]) + 1]) == {"train": result["train"]}  # figures before the eval starts
    train, ev = result["train"], result["eval"]
    assert train["tokens_per_s"] == pytest.approx(train["micro_batch_tokens"] / (train["ms_per_step"] / 1000), rel=0.01)
    # forward + backward of the matrices alone is 6 FLOPs per weight per token; the counted total includes them
    matrices = 2 * (32 * 32 * 2 + 32 * 16 * 2 + 2 * 32 * 64)   # 2 layers: q, o; k, v; MLP up and down (2x)
    assert train["flops_per_step"] >= 6 * matrices * train["micro_batch_tokens"] + train["attention_flops_per_step"]
    assert 0 < train["attention_flops_per_step"] < 14 * 2 * 16 * 2 * 512 * 64  # packed: below 8 full 64-rows
    assert train["mfu"] is None and "peak_memory_gib" not in train  # no known peak, no device memory on a CPU
    assert ev["flat_tokens_per_s"] > 0 and ev["ttt_mode"] == "lora-ttt" and ev["ttt_tokens_per_s"] > 0
    row = md.read_text().strip()
    assert row.startswith("| cpu-smoke |") and row.count("|") == 13


def test_bench_no_train_runs_only_the_eval_stage(tmp_path, capsys):
    md = tmp_path / "BENCH.md"
    code = main(["bench", "--preset", "cpu-smoke", *SETS, "--no-train", "--no-ttt", "--eval-tokens", "256",
                 "--device", "cpu", "--markdown", str(md), "--json"])
    assert code == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)  # --json alone: stdout is one JSON object instead of the table
    assert "train" not in result and result["eval"]["flat_tokens_per_s"] > 0
    assert "bench: eval started " in captured.err and "training started" not in captured.err
    cells = [c.strip() for c in md.read_text().strip().strip("|").split("|")]
    assert cells[2:7] == ["n/a"] * 5 and cells[7] != "n/a" and cells[8] == "n/a"  # train columns, TTT


def test_the_cpu_is_named_by_its_model(tmp_path):
    """`device` is the CPU's model from /proc/cpuinfo (x86 `model name`, ARM `Model`), not the machine type."""
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)  Gold 6130\n\n"
                   "processor\t: 1\nmodel name\t: Intel(R) Xeon(R)  Gold 6130\n")
    arm.write_text("processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t: Raspberry Pi 4 Model B\n")
    assert cpu_model(x86) == "Intel(R) Xeon(R) Gold 6130"
    assert cpu_model(arm) == "Raspberry Pi 4 Model B"
    assert cpu_model(tmp_path / "none") == (platform.processor() or platform.machine() or "cpu")
    assert device_name(torch.device("cpu")) == cpu_model()


def test_markdown_row_without_either_stage():
    result = {"preset": "p", "device": "d", "torch": "2.x", "commit": "abc", "date": "2025-01-01"}
    assert markdown_row(result) == "| p | d | n/a | n/a | n/a | n/a | n/a | n/a | n/a | torch 2.x | abc | 2025-01-01 |"


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--no-train", "--eval-tokens", "0"], ["--eval-tokens", "-1"]])
def test_bench_refuses_bad_input(capsys, argv):
    assert main(["bench", "--preset", "cpu-smoke", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgolf: error: bench:")


def test_attention_flops_follow_flop_counter_sdpa_convention():
    """`attention_flops` per segment equals torch's own SDPA formulas on each segment alone (heads, lengths and a
    value width different from the key width), and, with 64-dim heads, 4*H*L^2*D forward and 10*H*L^2*D backward."""
    heads, dq, dv, lengths = 3, 16, 8, [5, 1, 17]
    fwd, bwd = attention_flops(heads, dq, lengths, value_dim=dv)
    assert fwd == sum(flop_counter.sdpa_flop_count((1, heads, n, dq), (1, heads, n, dq), (1, heads, n, dv))
                      for n in lengths)
    assert bwd == sum(flop_counter.sdpa_backward_flop_count((1, heads, n, dv), (1, heads, n, dq), (1, heads, n, dq),
                                                            (1, heads, n, dv)) for n in lengths)
    assert attention_flops(8, 64, [2048]) == (4 * 8 * 2048**2 * 64, 10 * 8 * 2048**2 * 64)


def _broadcast_heads(kv, q):
    return (kv[0], q[1], *kv[2:])  # GQA counted per query head (torch 2.11's formula takes equal heads only)


# What a real eager step counts once the CPU SDPA kernel (no formula in torch) gets torch's SDPA formulas.
CPU_SDPA_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *a, out_shape=None, **kw: flop_counter.sdpa_flop_count(
            q, _broadcast_heads(k, q), _broadcast_heads(v, q)),
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward:
        lambda g, q, k, v, *a, out_shape=None, **kw: flop_counter.sdpa_backward_flop_count(
            g, q, _broadcast_heads(k, q), _broadcast_heads(v, q)),
}


@pytest.mark.parametrize("options, virtual_layers, expected", [
    ([], 2, (94_371_840, 29_360_128)),
    (RECORD_OPTIONS, 3, (117_792_768, 44_040_192)),
])
def test_flop_count_equals_a_real_eager_step_unpacked(options, virtual_layers, expected):
    """The meta count of the unpacked layout against one real eager CPU step under FlopCounterMode (the old count):
    its matmuls equal the real step's count, which has no attention (torch has no formula for the CPU SDPA
    kernel), and its total equals the real step's with torch's SDPA formulas registered for that kernel."""
    cfg = resolve_config("cpu-smoke", TINY_MODEL_SETS + options)
    torch.manual_seed(0)
    model = GPT(cfg.model)
    model.set_looping(cfg.model.num_loops > 0)
    ids = synthetic_tokens(513, 512, cfg.model.bos_id, mean_doc=32)
    x, y = ids[:-1].view(8, 64), ids[1:].view(8, 64)
    with flop_counter.FlopCounterMode(display=False) as plain:
        model(x, y).backward()
    with flop_counter.FlopCounterMode(display=False, custom_mapping=CPU_SDPA_FORMULAS) as with_sdpa:
        model(x, y).backward()
    counted = count_step_flops(cfg, (8, 64))
    assert (counted.total - counted.attention, counted.attention) == expected
    assert counted.total - counted.attention == plain.get_total_flops()
    assert counted.total == with_sdpa.get_total_flops()
    assert counted.attention == virtual_layers * 8 * 14 * 2 * 64**2 * 16  # rows x (4 + 10) x H x T^2 x D


def test_packed_attention_counted_per_segment():
    """A packed row of 64 tokens with BOS at 0, 10 and 40: segments of 10, 30 and 24 tokens, attention
    14 x H x D x (10^2 + 30^2 + 24^2) per layer; the matmuls are those of the unpacked row of the same tokens."""
    cfg = resolve_config("cpu-smoke", TINY_MODEL_SETS + ["train.loader=packed"])
    ids = torch.full((1, 64), 7)
    ids[0, [0, 10, 40]] = cfg.model.bos_id
    segments = document_segments(ids, cfg.model.bos_id, 64)
    packed, unpacked = count_step_flops(cfg, (1, 64), segments), count_step_flops(cfg, (1, 64))
    assert packed.attention == 2 * 14 * 2 * 16 * (10**2 + 30**2 + 24**2) == 1_412_096
    assert unpacked.attention == 2 * 14 * 2 * 16 * 64**2 == 3_670_016
    assert packed.total - packed.attention == unpacked.total - unpacked.attention == 11_796_480


def test_flop_count_of_the_record_step_allocates_nothing():
    """The record's micro-batch (98,304 packed tokens, vocab 8192, 17 virtual layers): a real eager step would hold
    tens of GiB; the count's model is meta only, and the count adds little to the process's peak memory."""
    cfg = resolve_config("record", [])
    model = counting_model(cfg)
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}
    assert model.looping and model.slots == 17
    tokens = cfg.train.micro_batch_tokens
    ids = synthetic_tokens(tokens, cfg.model.vocab_size, cfg.model.bos_id, mean_doc=1024).view(1, -1)
    segments = document_segments(ids, cfg.model.bos_id, cfg.train.train_seq_len)
    lengths = np.diff(segments.cu_seqlens[:segments.count + 1].numpy()).astype(np.int64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    counted = count_step_flops(cfg, (1, tokens), segments)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024
    assert counted.attention == 17 * 14 * 8 * 64 * int((lengths**2).sum())
    block = 512 * 512 * 2 + 512 * 256 * 2 + 2 * 512 * 2048  # q, o; k, v; MLP up and down (4x)
    assert counted.total - counted.attention >= 6 * 17 * block * tokens  # 17 applications of the block matrices
