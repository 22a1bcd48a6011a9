"""`optim.matrix_optimizer=soap`: heavyball's SOAP on the blocks' matrices (pgolf/optim/soap.py)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import TINY_MODEL_SETS
from pgolf.errors import PgolfError
from pgolf.model.gpt import GPT
from pgolf.optim.groups import build_optimizers, parameter_roles
from pgolf.runtime import DistContext
from pgolf.train.sync import GradSync

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
SOAP = ("optim.matrix_optimizer=soap", "optim.matrix_lr=0.01")


def _sync(cfg) -> GradSync:
    torch.manual_seed(0)
    model = GPT(cfg.model)
    return GradSync(model, model, build_optimizers(model, cfg.optim), cfg.optim, CPU)


def _batch(cfg, step: int) -> torch.Tensor:
    return torch.randint(0, cfg.model.vocab_size, (2, 32), generator=torch.Generator().manual_seed(100 + step % 2))


def _step(sync: GradSync, cfg, step: int = 0, lr_mul: float = 1.0) -> float:
    sync.zero_grad()
    x = _batch(cfg, step)
    with sync.micro_step(last=True):
        loss = sync.model(x, torch.roll(x, -1, 1))
        loss.backward()
    sync.step(step, lr_mul)
    return loss.item()


def _snapshot(sync: GradSync) -> tuple:
    """Weights and both optimizers' state, as the trainer's warm-up saves them."""
    return ({k: v.clone() for k, v in sync.base_model.state_dict().items()},
            *(copy.deepcopy(opt.state_dict()) for opt in sync.optimizers))


def _restore(sync: GradSync, saved: tuple) -> None:
    sync.base_model.load_state_dict(saved[0])
    for opt, state in zip(sync.optimizers, saved[1:]):
        opt.load_state_dict(copy.deepcopy(state))  # a loaded optimizer shares the dict's tensors


def test_soap_takes_the_matrices_and_only_them(tiny_config):
    heavyball = pytest.importorskip("heavyball")
    cfg = tiny_config(*SOAP)
    sync = _sync(cfg)
    adam, soap = sync.optimizers
    assert isinstance(soap, heavyball.SOAP) and not sync.muons
    roles = parameter_roles(sync.base_model)
    names = {id(p): n for n, p in sync.base_model.named_parameters()}
    in_soap = {names[id(p)] for g in soap.param_groups for p in g["params"]}
    assert in_soap == {n for n, r in roles.items() if r == "matrix"}
    assert not in_soap & {names[id(p)] for g in adam.param_groups for p in g["params"]}
    assert soap.param_groups[0]["base_lr"] == soap.param_groups[0]["lr"] == 0.01


def test_a_few_soap_steps_reduce_the_loss_and_the_schedule_scales_its_lr(tiny_config):
    pytest.importorskip("heavyball")
    cfg = tiny_config(*SOAP)
    sync = _sync(cfg)
    first = _step(sync, cfg, 0)
    for step in range(1, 5):
        _step(sync, cfg, step)
    sync.zero_grad()
    with torch.no_grad():
        x = _batch(cfg, 0)
        assert sync.model(x, torch.roll(x, -1, 1)).item() < first - 0.1
    group = sync.optimizers[1].param_groups[0]
    # From the same state, one step at multiplier 0.5 moves the matrices half as far as at 1.0 (weight decay 0).
    saved = _snapshot(sync)
    moves = []
    for mul in (1.0, 0.5, 0.0):
        _restore(sync, saved)
        group = sync.optimizers[1].param_groups[0]  # loading replaces the group dicts
        before = [p.detach().clone() for p in group["params"]]
        _step(sync, cfg, 5, lr_mul=mul)
        assert group["lr"] == pytest.approx(0.01 * mul) and group["base_lr"] == 0.01  # the next step's base
        moves.append(torch.cat([(p.detach() - b).flatten() for p, b in zip(group["params"], before)]))
    torch.testing.assert_close(moves[1], 0.5 * moves[0], rtol=1e-4, atol=1e-7)
    assert moves[2].abs().max() == 0 and moves[0].abs().max() > 0


def test_soap_state_round_trips_through_the_warmup_copy_and_a_checkpoint(tiny_config, tmp_path):
    pytest.importorskip("heavyball")
    from pgolf.train.checkpoint import read_state, write_state

    cfg = tiny_config(*SOAP)
    sync = _sync(cfg)
    for step in range(3):
        _step(sync, cfg, step)
    soap = sync.optimizers[1]
    write_state(tmp_path / "ck.pgck", {"soap": soap.state_dict()})  # tensors and JSON only: no sets, no pickles
    saved = _snapshot(sync)
    ahead = [_step(sync, cfg, step) for step in (3, 4)]
    for loaded in (saved[2], read_state(tmp_path / "ck.pgck")[0]["soap"]):
        _restore(sync, (*saved[:2], loaded))
        assert [_step(sync, cfg, step) for step in (3, 4)] == ahead


def test_bad_matrix_optimizer_and_sharded_soap_are_refused_in_one_line(tiny_config):
    with pytest.raises(PgolfError, match=r"optim.matrix_optimizer='adam' must be one of muon, soap") as bad:
        tiny_config("optim.matrix_optimizer=adam")
    assert "\n" not in str(bad.value)
    pytest.importorskip("heavyball")
    with pytest.raises(PgolfError, match="muon_sharded=false") as sharded:
        tiny_config(*SOAP, "optim.muon_sharded=true", "optim.grad_clip_scope=rank")
    assert "\n" not in str(sharded.value)


def test_missing_heavyball_is_one_clear_line(tiny_config, monkeypatch):
    monkeypatch.setitem(sys.modules, "heavyball", None)  # `import heavyball` now raises ImportError
    with pytest.raises(PgolfError, match="pip install heavyball") as missing:
        tiny_config(*SOAP)
    assert "\n" not in str(missing.value)
    tiny_config()  # Muon runs need no heavyball


def test_heavyball_compiles_only_where_muon_compile_says(tiny_config):
    heavyball = pytest.importorskip("heavyball")
    from pgolf.optim.soap import HEAVYBALL_COMPILE_MODE, build_soap

    before = heavyball.utils.compile_mode
    try:
        params = [torch.nn.Parameter(torch.zeros(4, 4))]
        build_soap(params, tiny_config(*SOAP).optim)  # muon_compile=auto: CUDA only
        assert heavyball.utils.compile_mode is None
        build_soap(params, tiny_config(*SOAP, "optim.muon_compile=on").optim)
        assert heavyball.utils.compile_mode == HEAVYBALL_COMPILE_MODE
    finally:
        heavyball.utils.compile_mode = before


def _torchrun_losses(nproc: int, data, run_dir) -> list[float]:
    sets = [f"--set={s}" for s in [*TINY_MODEL_SETS, *SOAP, "train.iterations=4", "train.val_loss_every=0"]]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "pgolf", "train", "--preset", "cpu-smoke", "--data", str(data), "--run-dir", str(run_dir), *sets]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train_loss"] for r in rows if "train_loss" in r]


@pytest.mark.slow
def test_soap_steps_on_averaged_gradients_under_ddp(tiny_data, tmp_path):
    """2 gloo ranks x 1 micro-step train as 1 rank x 2 micro-steps: SOAP sees the gradient DDP averaged over the
    ranks, and every rank takes the same step (the per-rank clip's reduction covers every parameter alike)."""
    pytest.importorskip("heavyball")
    one = _torchrun_losses(1, tiny_data, tmp_path / "one")
    two = _torchrun_losses(2, tiny_data, tmp_path / "two")
    assert len(one) == len(two) == 4
    assert two == pytest.approx(one, rel=1e-5, abs=1e-6)
