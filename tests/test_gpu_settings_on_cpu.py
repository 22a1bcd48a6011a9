"""The settings CUDA picks by default (`auto`), forced on the CPU: the bf16 body (`train.body_dtype=bf16`), the packed
loader with document-isolated attention, sharded Muon, per-rank clipping and the record's options, through a whole
run (warm-up, EMA, export, roundtrip score). A dtype mistake between the bf16 embedding table and the float32 rest
(optimizer, EMA, clipping, export) then fails here, not on the GPU. (`train.kernels=on` is left out: one row per
Triton program makes the interpreter take minutes; tests/model/test_kernels.py covers the kernels, compiled too.)"""

from __future__ import annotations

import math

from pgolf.train.trainer import train

CUDA_DEFAULTS = ["train.body_dtype=bf16", "train.loader=packed", "train.prefetch=2",
                 "model.mlp_activation=leaky_relu2", "model.rope_dims=8", "model.ln_scale=true", "model.xsa_last_n=2",
                 "model.smear_gate=true", "model.attn_gate=sparse", "model.skip_gates=true", "model.num_loops=1",
                 "model.loop_start=0", "model.loop_end=0", "model.loop_start_frac=0.5",
                 "model.parallel_mode=two_lane", "model.parallel_start=1", "optim.muon_sharded=true",
                 "optim.muon_ns=polar_express", "optim.ema_decay=0.9", "optim.grad_clip_norm=0.3",
                 "optim.grad_clip_scope=rank"]


def test_cuda_default_settings_train_and_export_on_cpu(tiny_data, tiny_config, tmp_path):
    result = train(tiny_config(*CUDA_DEFAULTS), tiny_data, tmp_path / "run", echo=None)
    assert result["steps"] == 6
    assert math.isfinite(result["val_bpb"]) and 0 < result["val_bpb"] < 20
    assert (tmp_path / "run" / "artifact.pgolf").stat().st_size == result["artifact_bytes"]
