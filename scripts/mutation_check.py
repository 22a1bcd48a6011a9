#!/usr/bin/env python
"""Mutation check: break each record technique's defining line and confirm that some test fails.

Each mutant names a file under src/pgolf, an exact snippet that must occur there exactly once, its replacement and
a one-line description. Every run happens in a fresh temporary copy of src/, tests/ and pyproject.toml, with
PYTHONPATH pointing at the copy's src/ (the working tree is never modified, even if the script is killed). The script
first checks that the unmutated copy's tests pass and that they import the copy, not the editable install; then, for
each mutant, it writes the mutated file into its own copy and runs the mutant's test files with `pytest -x` (`--jobs`
mutants at a time, one torch thread each). It prints a Markdown table (mutant, file, description, caught, first
failing test) and exits non-zero if a mutant survives or a snippet is not found exactly once (so it fails loudly
when the code moves and the list needs updating).

    python scripts/mutation_check.py             # every mutant
    python scripts/mutation_check.py skip_gate   # only mutants whose name contains "skip_gate"
    python scripts/mutation_check.py --list      # the mutants, without running anything

See docs/mutation.md for the last measured table.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Test files run against each mutant, in this order (pytest stops at the first failure, -x).
MODEL_TESTS = ("tests/model/test_techniques_reference.py", "tests/model/test_techniques.py",
               "tests/model/test_gpt_reference.py")
OPTIM_TESTS = ("tests/optim/test_record_optim.py", "tests/optim/test_muon_oracle.py")


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str      # relative to src/pgolf
    find: str      # must occur exactly once in the file
    replace: str
    what: str
    tests: tuple[str, ...] = MODEL_TESTS


# The decoder loop of GPT.hidden, where the lanes start before the U-Net skip (mutated as a whole below).
TWO_LANE_DECODER = """            lane1 = self._start_lanes(i, x, lane1)
            if j < len(encoder):
                skip = self.skip_weights[j].to(x.dtype) * skips.pop()
                if self.skip_gates is None:
                    x = x + skip
                else:
                    x = skip + torch.sigmoid(self.skip_gates[j]).to(x.dtype) * (x - skip)
            x, lane1 = self.blocks[i](x, x0, lane1, ve, shared, slot(len(encoder) + j), segments)"""


MUTANTS = [
    # Baseline wiring that the techniques build on.
    Mutant("resid_mix_x0", "model/gpt.py",
           "mixed = mix[0] * x + mix[1] * x0", "mixed = mix[0] * x",
           "resid_mix: the x0 term is dropped"),
    Mutant("unet_skip_weight", "model/gpt.py",
           "skip = self.skip_weights[j].to(x.dtype) * skips.pop()", "skip = skips.pop()",
           "U-Net skips ignore skip_weights"),
    Mutant("qk_gain", "model/attention.py",
           "q = q * self.q_gain.to(q.dtype)[None, :, None, None]", "q = q",
           "q_gain is not applied"),
    Mutant("logit_softcap", "model/gpt.py",
           "return c * torch.tanh(z / c) if c > 0 else z", "return z",
           "logit softcap removed"),
    # Record techniques (ModelConfig options).
    Mutant("leaky_slope_value", "model/choices.py",
           '"leaky_relu2": 0.5}', '"leaky_relu2": 0.0}',
           "leaky_relu2: slope 0.5 -> 0.0 (plain relu^2)"),
    Mutant("leaky_slope_ignored", "model/gpt.py",
           "h2 = (F.leaky_relu(h, self.negative_slope) if self.negative_slope else torch.relu(h)).square()",
           "h2 = torch.relu(h).square()",
           "leaky_relu2: MLP forward ignores the slope"),
    Mutant("partial_rope", "model/attention.py",
           "self.rope_dims = rope_dims or head_dim", "self.rope_dims = head_dim",
           "rope_dims ignored: every head dim rotates"),
    Mutant("ln_scale", "model/gpt.py",
           "return self.norm_scale * F.rms_norm(x, (x.size(-1),))", "return F.rms_norm(x, (x.size(-1),))",
           "ln_scale: the 1/sqrt(layer+1) factor is dropped"),
    Mutant("xsa", "model/attention.py",
           "y = exclude_self_value(y, v)", "y = y",
           "XSA: the self-value projection is not removed"),
    Mutant("ortho_init", "model/gpt.py",
           "nn.init.orthogonal_(module.weight)", "pass",
           "ortho_init: orthogonal init skipped"),
    Mutant("skip_gate", "model/gpt.py",
           "x = skip + torch.sigmoid(self.skip_gates[j]).to(x.dtype) * (x - skip)", "x = x + skip",
           "skip_gates: gated skip replaced by a plain add"),
    Mutant("smear_gate", "model/gpt.py",
           "x = self.smear(x, input_ids)", "x = x",
           "smear_gate: SmearGate not applied"),
    Mutant("smear_bos_fix", "model/smear.py",
           "mixed = mixed * (input_ids != self.bos_id).unsqueeze(-1).to(x.dtype)", "mixed = mixed",
           "smear_gate: BOS fix dropped (leaks across documents)"),
    Mutant("bigram", "model/gpt.py",
           "x = x + self.bigram(input_ids)", "x = x",
           "bigram_rows: BigramHash not added"),
    Mutant("bigram_hash", "model/bigram.py",
           "torch.bitwise_xor(36313 * cur, 27191 * prev)", "torch.bitwise_xor(36313 * cur, 27191 * cur)",
           "bigram_rows: hash ignores the previous token"),
    Mutant("value_embed", "model/attention.py",
           "v = v + value_embed", "v = v",
           "value_embed_last_n: value embedding not added to V"),
    Mutant("attn_gate_applied", "model/attention.py",
           "y = y * self.gate(x)", "y = y",
           "attn_gate: gate not applied"),
    Mutant("attn_gate_out", "model/attention.py",
           "g = 2 * torch.sigmoid(z)", "g = torch.sigmoid(z)",
           "attn_gate=out: factor 2 dropped"),
    Mutant("attn_gate_gated_inputs", "model/attention.py",
           'self.inputs = dim if kind == "gated" else 12', "self.inputs = 12",
           "attn_gate=gated: reads 12 dims instead of the full input"),
    Mutant("attn_gate_sparse_scale", "model/attention.py",
           "g = torch.sigmoid(self.scale * z)", "g = torch.sigmoid(z)",
           "attn_gate=sparse: attn_gate_scale ignored"),
    Mutant("gptj_norm", "model/gpt.py",
           "return mixed + a + self.mlp_scale.to(x.dtype) * self.mlp(h, adapter), lane1",
           "return mixed + a + self.mlp_scale.to(x.dtype) * self.mlp(self._norm(mixed + a), adapter), lane1",
           "parallel_mode=gptj: MLP reads the post-attention stream"),
    Mutant("two_lane_mixed_lane0", "model/gpt.py",
           "return rho[0] * x + p[0, 0] * a", "return rho[0] * mixed + p[0, 0] * a",
           "parallel_mode=two_lane: lane 0 continues from the resid_mix value instead of unmixed"),
    Mutant("two_lane_start_after_skip", "model/gpt.py",
           TWO_LANE_DECODER, TWO_LANE_DECODER.replace(
               "            lane1 = self._start_lanes(i, x, lane1)\n", "").replace(
               "self.blocks[i](x, x0, lane1, ve,",
               "self.blocks[i](x, x0, self._start_lanes(i, x, lane1), ve,"),
           "parallel_mode=two_lane: lane 1 starts after the first two-lane layer's U-Net skip"),
    Mutant("two_lane_mlp_lane", "model/gpt.py",
           "self.mlp(self._norm(lane1), adapter)", "self.mlp(self._norm(x), adapter)",
           "parallel_mode=two_lane: MLP reads lane 0"),
    Mutant("two_lane_mixing", "model/gpt.py",
           "return rho[0] * x + p[0, 0] * a + p[1, 0] * m, rho[1] * lane1 + p[0, 1] * a + p[1, 1] * m",
           "return x + a + m, lane1 + a + m",
           "parallel_mode=two_lane: learnable lane mixing dropped"),
    Mutant("recurrence", "model/recurrence.py",
           "return list(range(loop_end + 1)) + repeat * num_loops + list(range(loop_end + 1, num_layers))",
           "return list(range(num_layers))",
           "num_loops: layers are not repeated"),
    Mutant("value_residual", "model/attention.py",
           'v = v + torch.sigmoid(self.vres_alpha).to(v.dtype) * shared["v_first"]', "v = v",
           "value_residual: first layer's V not added"),
    Mutant("ntk_rope", "model/attention.py",
           "if self.ntk_train_len and n > self.ntk_train_len and self.rope_dims > 2:", "if False:",
           "rope_ntk_train_len: NTK scaling off"),
    # Optimizer techniques (OptimConfig options).
    Mutant("polar_express", "optim/muon.py",
           "return [POLAR_EXPRESS[min(i, len(POLAR_EXPRESS) - 1)] for i in range(steps)]",
           "return [CLASSIC_NS5] * steps",
           "muon_ns=polar_express runs the classic coefficients", OPTIM_TESTS),
    Mutant("muon_row_norm", "optim/muon.py",
           "g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-7)", "g = g",
           "muon_row_norm (MuonEq-R): row normalisation skipped", OPTIM_TESTS),
    Mutant("muon_weight_decay", "optim/muon.py",
           "p.mul_(1 - lr * wd)", "pass",
           "muon_weight_decay: decay skipped", OPTIM_TESTS),
    Mutant("segments_ignored", "model/attention.py",
           "y = segment_attention(q, k, v, segments)",
           "y = F.scaled_dot_product_attention(q, k, v, is_causal=True,\n"
           "                                   enable_gqa=self.num_kv_heads != self.num_heads)",
           "train.loader=packed: attention crosses document boundaries", ("tests/model/test_document_attention.py",)),
    Mutant("segment_positions", "data/segments.py",
           "positions = (idx - first).reshape(rows, length)",
           "positions = np.broadcast_to(idx, (rows, length)) % length",
           "packed documents: RoPE positions do not restart at a segment", ("tests/model/test_document_attention.py",)),
    Mutant("softcap_ce_backward", "model/kernels.py",
           "dz = g * p * (1.0 - th * th)", "dz = g * p",
           "fused softcapped CE: backward forgets the softcap's derivative", ("tests/model/test_kernels.py",)),
    Mutant("sharded_muon_no_reduction", "optim/sharded_muon.py",
           "return shard, dist.reduce_scatter_tensor(shard, bank, op=dist.ReduceOp.SUM, async_op=True)",
           "return shard.copy_(bank[:shard.size(0)]), dist.barrier(async_op=True)",
           "muon_sharded: each rank keeps its own gradient slice instead of the reduced one",
           ("tests/optim/test_sharded_muon.py",)),
    Mutant("legality_cycles", "eval/legality.py",
           "released_first = torch.from_numpy(ref.adapt.released_at[t + 1:] <= ref.yielded_at[t])",
           "released_first = torch.zeros(n - t, dtype=torch.bool)",
           "pgolf legality: cycles through adaptation go unchecked", ("tests/eval/test_legality.py",)),
    Mutant("ngram_tie_keeps_first", "eval/ngram.py",
           "rise[1:] = run[1:] > run[:-1]", "rise[1:] = run[1:] >= run[:-1]",
           "n-gram hints: a tie hands the top to the later token", ("tests/eval/test_ngram.py",)),
    Mutant("tilt_renormalisation", "eval/tilt.py",
           "log_z = torch.log1p(p_hint * torch.expm1(boost))", "log_z = torch.zeros_like(boost)",
           "n-gram tilt: the boosted distribution is not renormalised", ("tests/eval/test_tilt.py",)),
    Mutant("logit_caps_frozen_in_phases", "eval/ttt_lora.py",
           "symmetric=not self.s.train_logit_caps", "symmetric=False",
           "AsymLogit: the global TTT phases use the asymmetric cap by default", ("tests/eval/test_ttt_logit_caps.py",)),
    Mutant("lqer_group_ignored", "quant/lqer.py",
           "n_groups = -(-flat.numel() // group)", "group = LQER_GROUP\n    n_groups = -(-flat.numel() // group)",
           "LQER: the B factor always uses groups of 64", ("tests/quant/test_lqer_group.py",)),
]


def copy_repo(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    shutil.copytree(REPO / "src", dest / "src", ignore=ignore)
    shutil.copytree(REPO / "tests", dest / "tests", ignore=ignore)
    shutil.copy2(REPO / "pyproject.toml", dest / "pyproject.toml")


def environment(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(root / "src")    # ahead of the editable install's .pth entry (checked in main)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["OMP_NUM_THREADS"] = "1"             # tiny models; parallel jobs share the cores
    return env


def run_pytest(root: Path, tests: tuple[str, ...]) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-rfE", *tests]
    proc = subprocess.run(cmd, cwd=root, env=environment(root), capture_output=True, text=True, timeout=900)
    return proc.returncode, proc.stdout + proc.stderr


def first_failure(output: str) -> str:
    match = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    return match.group(1) if match else "?"


def check_mutant(m: Mutant) -> tuple[bool, str]:
    """(caught, first failing test or what went wrong) for one mutant, run in its own copy of the repo."""
    with tempfile.TemporaryDirectory(prefix=f"pgolf-mutant-{m.name}-") as tmp:
        root = Path(tmp)
        copy_repo(root)
        path = root / "src/pgolf" / m.file
        path.write_text(path.read_text(encoding="utf-8").replace(m.find, m.replace), encoding="utf-8")
        rc, out = run_pytest(root, m.tests)
    if rc == 1:
        return True, f"`{first_failure(out)}`"
    if rc == 0:
        return False, "survived"
    last = out.strip().splitlines()[-1].replace("|", "/") if out.strip() else ""
    return False, f"pytest exited {rc}: {last}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="run only mutants whose name contains one of these")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="mutants run at a time")
    args = parser.parse_args()
    mutants = [m for m in MUTANTS if not args.names or any(n in m.name for n in args.names)]
    if args.list:
        for m in mutants:
            print(f"{m.name:24} src/pgolf/{m.file:22} {m.what}")
        return 0

    # Every snippet must occur exactly once before anything runs.
    bad = []
    for m in mutants:
        count = (REPO / "src/pgolf" / m.file).read_text(encoding="utf-8").count(m.find)
        if count != 1:
            bad.append(f"{m.name}: snippet found {count} times in src/pgolf/{m.file}: {m.find!r}")
    if bad:
        print("\n".join(bad), file=sys.stderr)
        return 2

    start = time.perf_counter()
    # The unmutated copy: the tests must import it (not the editable install) and must pass.
    with tempfile.TemporaryDirectory(prefix="pgolf-mutant-none-") as tmp:
        root = Path(tmp)
        copy_repo(root)
        where = subprocess.run([sys.executable, "-c", "import pgolf; print(pgolf.__file__)"], cwd=root,
                               env=environment(root), capture_output=True, text=True, check=True).stdout.strip()
        if not Path(where).resolve().is_relative_to(root.resolve()):
            print(f"the tests would import {where}, not the temporary copy in {root}", file=sys.stderr)
            return 2
        all_tests = tuple(dict.fromkeys(t for m in mutants for t in m.tests))
        rc, out = run_pytest(root, all_tests)
        if rc != 0:
            print(out[-3000:], file=sys.stderr)
            print(f"the unmutated tests do not pass (pytest exited {rc}); nothing to check", file=sys.stderr)
            return 2
    print(f"unmutated: {len(all_tests)} test files pass ({time.perf_counter() - start:.0f} s), importing the copy",
          file=sys.stderr)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = list(pool.map(check_mutant, mutants))
    print("| mutant | file | description | caught | by (first failing test) |")
    print("|---|---|---|---|---|")
    for m, (caught, by) in zip(mutants, results):
        print(f"| {m.name} | src/pgolf/{m.file} | {m.what} | {'yes' if caught else '**no**'} | {by} |")
    survivors = sum(not caught for caught, _ in results)
    print(f"\n{len(mutants) - survivors}/{len(mutants)} mutants caught; {time.perf_counter() - start:.0f} s wall "
          f"with {args.jobs} jobs")
    return 1 if survivors else 0


if __name__ == "__main__":
    sys.exit(main())
