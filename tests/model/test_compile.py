"""Compiling the one model whole (`fullgraph=True`, fixed shapes): one graph per sequence length and recurrence
state, compiled once and never again, so the sequence-length schedule and the loop switch cost no recompiles after
the warm-up has visited each of them."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from pgolf.config import ModelConfig
from pgolf.model.gpt import GPT

pytestmark = pytest.mark.usefixtures("one_thread")


def test_no_recompiles_across_sequence_lengths_and_the_loop_switch():
    cfg = ModelConfig(vocab_size=64, num_layers=3, model_dim=16, num_heads=2, num_kv_heads=1, num_loops=1,
                      loop_start=1, loop_end=1, parallel_mode="two_lane", parallel_start=2, xsa_last_n=3,
                      smear_gate=True, attn_gate="sparse", rope_dims=4, skip_gates=True)
    model = GPT(cfg)
    counter = CompileCounter()  # counts graphs; fullgraph=True makes any graph break an error
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=False)
    states = [(t, looping) for t in (16, 32, 64) for looping in (False, True)]
    for rep in range(2):
        for t, looping in states:
            model.set_looping(looping)
            x = torch.randint(0, 64, (2, t))
            compiled(x, x).backward()
        assert counter.frame_count == len(states), rep  # the second pass compiles nothing
    torch._dynamo.reset()
