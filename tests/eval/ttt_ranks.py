"""Run under torchrun by tests/eval/test_ttt.py: score a stream with a TTT mode split across the ranks (gloo) and
write rank 0's totals to a JSON file. Usage: ttt_ranks.py SPEC.json, where the spec names the config overrides,
the TTT settings, the mode, the tokens and the output path."""

from __future__ import annotations

import json
import sys

import numpy as np
import torch


def build(spec: dict):
    """The spec's model (seeded random weights), tokens and mode: the same in the test and on every rank."""
    from pgolf.eval.modes import make_mode
    from pgolf.config import TTTConfig
    from pgolf.eval.ttt import ttt_factories
    from pgolf.model.gpt import GPT
    from pgolf.options import resolve_config

    cfg = resolve_config("cpu-smoke", spec["sets"], environ={})
    torch.manual_seed(spec["seed"])
    model = GPT(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    settings = TTTConfig(**spec["settings"])
    mode = make_mode(spec["mode"], seq_len=spec["seq_len"], bos_id=spec["bos"], extra=ttt_factories(settings))
    return model.eval(), np.array(spec["tokens"], dtype=np.int64), mode


def main(path: str) -> None:
    from pgolf.runtime import launch_env
    from pgolf.eval.evaluate import score_stream
    from pgolf.runtime import init_distributed

    spec = json.loads(open(path).read())
    torch.set_num_threads(1)
    ctx = init_distributed(launch_env(), "cpu")
    try:
        model, tokens, mode = build(spec)
        res = score_stream(model, tokens, np.ones(len(tokens) - 1, dtype=np.int64), mode, batch_tokens=4096,
                           device=ctx.device, ctx=ctx)
        if ctx.is_main:
            with open(spec["out"], "w") as f:
                json.dump({"nats": res.nats, "tokens": res.tokens, "world_size": ctx.world_size,
                           "report": res.report}, f)
    finally:
        ctx.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
