"""Write a run's float weights as the record's int6 export (no budget fitter), for comparing codecs on it.

    python benchmarks/int6_artifact.py RUN_DIR --data DIR --out FILE.pgolf [--calib-batches 4] [--no-gptq]

RUN_DIR must hold `model_fp32.pt` (train with `--set train.save_float=true`) and `config.json`. The run's own
`[quant]` settings are used (record-cpu and record: int6 matrices with SDClip k 13.0 attention / 11.5 MLP, int7
embedding k 14.0, int8 attention gates, GPTQ on training batches, LQER rank 4 on the 3 worst matrices) with
`fit = false`, so the bit widths stay the record's instead of whatever the fitter would choose under the cap. The
artifact is written with codec `ans` (the payload is what every codec is compared on; `benchmarks/codecs.py`).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from pgolf.artifact.format import save_artifact
from pgolf.config import Config
from pgolf.data.loader import DistributedTokenLoader
from pgolf.data.manifest import read_manifest
from pgolf.model.gpt import GPT
from pgolf.quant.gptq import HessianCollector
from pgolf.quant.recipe import quantize_for_export


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--calib-batches", type=int, default=4)
    ap.add_argument("--no-gptq", action="store_true", help="round to nearest on the SDClip grid (no Hessians)")
    args = ap.parse_args(argv)
    cfg = Config.from_dict(json.loads((args.run_dir / "config.json").read_text()))
    state = torch.load(args.run_dir / "model_fp32.pt", weights_only=True)
    q = copy.deepcopy(cfg.quant)
    q.fit = False
    q.gptq = q.gptq and not args.no_gptq
    hessians = None
    t0 = time.perf_counter()
    if q.gptq:
        model = GPT(cfg.model)
        model.load_state_dict(state)
        model.set_looping(cfg.model.num_loops > 0)
        model.eval()
        loader = DistributedTokenLoader(args.data, "train", vocab_size=cfg.model.vocab_size)
        with HessianCollector(model) as hc:
            for _ in range(args.calib_batches):
                x = loader.next_batch(cfg.train.micro_batch_tokens, cfg.train.train_seq_len, 1).x
                hc.collect(x)
        hessians = hc.hessians
    qm, _ = quantize_for_export(state, q, hessians=hessians)
    run_cfg = copy.deepcopy(cfg)
    run_cfg.quant = q
    size = save_artifact(args.out, qm, config=run_cfg.to_dict(), tokenizer=dict(read_manifest(args.data)["tokenizer"]),
                         codec="ans", level=11)
    print(f"{args.out}: {size:,} bytes, bits {q.bits}, gptq {q.gptq} ({time.perf_counter() - t0:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
