"""The wall-clock trainer: one process, one GPU, or many under torchrun, with the official semantics.

What it does, in order (docs/techniques.md#baseline-schedule-and-clock):
1. startup: validate the data directory against the model's vocabulary, build the ONE model, optimizers, loader;
2. warm-up: `warmup_steps` real steps to trigger compilation, then weights, optimizer state and loader position are
   restored, so the warm-up changes nothing but is excluded from the clock (as the baseline does);
3. training until `iterations` or the wall-clock cap, whichever first; the LR warmdown is time-based; validation
   pauses the clock; every rank agrees on the stop step through an all-reduce;
4. export: quantize, compress and write the artifact (rank 0), then every rank re-reads the artifact FILE and scores
   it: the reported number is the decompressed artifact's score, never the in-memory model's.

Reliability (docs/RELIABILITY.md): every `train.checkpoint_every` steps, and when SIGINT or SIGTERM arrives, the run
writes a checkpoint (pgolf/train/checkpoint.py) from which `pgolf train --resume RUN_DIR` continues bit for bit on CPU
under the step schedule; a non-finite loss or parameter stops the run with the step and tensor group named, before
any checkpoint or artifact could record it.

Gradient accumulation keeps the global batch at `train_batch_tokens` for every world size (see TrainConfig).
"""

from __future__ import annotations

import copy
import signal
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel as DDP

import pgolf
from pgolf.config import Config, LaunchEnv, launch_env
from pgolf.errors import PgolfError, choose
from pgolf.fileio import atomic_write_json
from pgolf.runtime import DistContext, PhaseClock, autocast_for, init_distributed, should_compile
from pgolf.train import checkpoint as ckpt
from pgolf.train.export import export_and_score
from pgolf.train.resume import check_resume, load_checkpoint, save_checkpoint
from pgolf.train.runlog import STDOUT, RunLog
EXISTING = ("refuse", "overwrite", "resume")  # what `Trainer(existing=...)` does with a run directory's old content


class TrainingInterrupted(PgolfError):
    """SIGINT or SIGTERM stopped training after a checkpoint was written; `signum` is the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class TrainingDiverged(PgolfError):
    """The training loss or a parameter became NaN or infinite; nothing after the last good checkpoint is kept."""


class Trainer:
    """Holds the model, optimizers and loader of one run; `run()` does steps 2-4 of the module docstring."""

    def __init__(self, cfg: Config, data_dir: str | Path, run_dir: str | Path, *, env: LaunchEnv | None = None,
                 echo: TextIO | None = STDOUT, existing: str = "overwrite") -> None:
        """`existing`: refuse a non-empty run directory, overwrite what an earlier run wrote there, or resume the
        run whose checkpoint it holds (`cfg` must then be that run's config)."""
        from pgolf.data.loader import make_loader
        from pgolf.data.manifest import check_data_dir
        from pgolf.eval.evaluate import ValidationData
        from pgolf.model.gpt import GPT
        from pgolf.optim.groups import build_optimizers

        self.start_time = time.perf_counter()
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.run_dir = Path(run_dir)
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        if existing not in EXISTING:
            raise ValueError(f"existing={existing!r} is not one of {EXISTING}")
        if cfg.train.checkpoint_every < 0:
            raise PgolfError(f"config: train.checkpoint_every={cfg.train.checkpoint_every} must be >= 0 (0 = only on "
                             "SIGINT/SIGTERM)")
        self.ctx: DistContext = init_distributed(env or launch_env(), cfg.train.device)
        # Host-side flags (wall clock reached, signal caught) travel on a CPU group, read one step late (`_agree`).
        self._flag_group = torch.distributed.new_group(backend="gloo") if self.ctx.distributed else None
        self._flags_in_flight = None
        device = self.ctx.device
        self.clock = PhaseClock(sync=torch.cuda.synchronize if device.type == "cuda" else None)
        self.accum = cfg.grad_accum_steps(self.ctx.world_size)
        problem = ckpt.run_dir_problem(self.run_dir, existing) if self.ctx.is_main else None
        if self.ctx.any(problem is not None):
            raise PgolfError(problem or f"run directory {self.run_dir} cannot be used (rank 0 says why)")
        self.manifest, self.tokenizer_path = check_data_dir(self.data_dir, expected_vocab=cfg.model.vocab_size)
        self.resume_from = (check_resume(self.run_dir, cfg, self.ctx.world_size, self.data_dir, self.manifest)
                            if existing == "resume" else None)
        self.last_checkpoint: tuple[int, Path] | None = None
        self.resumes: list[int] = []
        self._signal: int | None = None
        if self.ctx.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if existing == "overwrite":
                ckpt.clear_run_outputs(self.run_dir)  # never resume, nor show, an older run's checkpoint or score
            atomic_write_json(self.run_dir / "config.json", cfg.to_dict())
        keep = int(self.resume_from["metrics_lines"]) if self.resume_from else None
        self.log = RunLog(self.run_dir, enabled=self.ctx.is_main, echo=echo, keep_metrics=keep)

        torch.manual_seed(cfg.train.seed)
        np.random.seed(cfg.train.seed)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.base_model = GPT(cfg.model).to(device)
        from pgolf.model.kernels import wanted
        from pgolf.model.precision import body_dtype, cast_body
        cast_body(self.base_model, body_dtype(cfg.train.body_dtype, device))  # bf16 tables on CUDA (official)
        self.base_model.use_kernels(wanted(cfg.train.kernels, device))
        from pgolf.optim.schedule import parse_seq_len_schedule
        self.seq_len_stages = parse_seq_len_schedule(cfg.train.seq_len_schedule, cfg.train.train_seq_len)
        self.seq_len = cfg.train.train_seq_len
        self.qat_layers = 0
        if cfg.quant.qat_bits:
            from pgolf.quant.qat import configure_qat
            self.qat_layers = configure_qat(self.base_model, cfg.quant)  # before compile: the flag is a buffer
        model: torch.nn.Module = self.base_model
        if should_compile(cfg.train.compile, device):
            model = torch.compile(model, dynamic=False, fullgraph=True)
        if self.ctx.distributed:
            ids = [self.ctx.local_rank] if device.type == "cuda" else None
            model = DDP(model, device_ids=ids, broadcast_buffers=False)
        self.model = model
        self.optimizers = build_optimizers(self.base_model, cfg.optim)
        from pgolf.optim.ema import WEIGHT_AVERAGES, weight_average_kind
        average = weight_average_kind(cfg.optim)
        self.ema = choose(WEIGHT_AVERAGES, average, "weight average")(self.base_model, cfg.optim) if average else None
        self.loader = make_loader(cfg, self.data_dir, self.ctx.rank, self.ctx.world_size, pin=device.type == "cuda")
        self.val = None
        if cfg.train.val_loss_every > 0:
            self.val = ValidationData(self.data_dir, cfg.model.vocab_size, max_tokens=cfg.train.val_max_tokens)
        self.clock.add("startup", time.perf_counter() - self.start_time)
        n_params = sum(p.numel() for p in self.base_model.parameters())
        self.log.line(f"pgolf {pgolf.__version__} preset:{cfg.preset} params:{n_params} world_size:{self.ctx.world_size} "
                      f"grad_accum_steps:{self.accum} device:{device.type} seed:{cfg.train.seed}")
        self.log.line(f"data:{self.data_dir} train_tokens:{self.manifest['splits']['train']['tokens']} "
                      f"val_tokens:{self.manifest['splits']['val']['tokens']}")
        if self.val is not None and not self.val.full:
            self.log.line(f"periodic validation scores the first {len(self.val.tokens)} val tokens only "
                          "(train.val_max_tokens); the final score uses the whole val split")
        self.n_params = n_params

    # ------------------------------------------------------------------ one optimizer step
    def _step(self, step: int, lr_mul: float, wd_mul: float = 1.0) -> torch.Tensor:
        from pgolf.optim.clip import clip_then_average
        from pgolf.optim.sharded_muon import ShardedMuon
        from pgolf.optim.muon import Muon
        from pgolf.optim.schedule import muon_momentum

        cfg, device = self.cfg, self.ctx.device
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        clip = cfg.optim.grad_clip_norm
        # Per-rank clipping needs each rank's own gradient: DDP does not reduce, clip_then_average does after clipping.
        # Sharded Muon reduces its matrices' gradients itself (one reduce-scatter), so DDP must not reduce them either.
        sharded = [opt for opt in self.optimizers if isinstance(opt, ShardedMuon)]
        per_rank = isinstance(self.model, DDP) and ((clip > 0 and cfg.optim.grad_clip_scope == "rank") or sharded)
        for micro in range(self.accum):
            x, y, segments = self.loader.next_batch(cfg.train.train_batch_tokens, self.seq_len, self.accum)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            segments = segments.to(device) if segments is not None else None
            last = micro == self.accum - 1
            sync = self.model.no_sync() if isinstance(self.model, DDP) and (per_rank or not last) else nullcontext()
            with sync:
                with autocast_for(device):
                    loss = self.model(x, y, segments=segments)
                (loss / self.accum).backward()
            total += loss.detach()
        momentum = muon_momentum(step, cfg.optim)
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = group["base_lr"] * lr_mul
                if isinstance(opt, Muon):
                    group["momentum"] = momentum
                    group["weight_decay"] = cfg.optim.muon_weight_decay * wd_mul
        if per_rank and sharded:
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(self.base_model.parameters(), clip)
            owned = {id(p) for opt in sharded for g in opt.param_groups for p in g["params"]}
            clip_then_average([p for p in self.base_model.parameters() if id(p) not in owned], 0.0, self.ctx)
        elif per_rank:
            clip_then_average(self.base_model.parameters(), clip, self.ctx)
        elif clip > 0:
            torch.nn.utils.clip_grad_norm_(self.base_model.parameters(), clip)
        for opt in sharded:  # reduce-scatter and Newton-Schulz now; the all-gathers overlap the other steps
            opt.launch()
        for opt in self.optimizers:
            if opt not in sharded:
                opt.step()
        for opt in sharded:
            opt.finish()
        if self.ema is not None:
            if hasattr(self.ema, "maybe_add"):
                self.ema.maybe_add(self.base_model, step + 1, lr_mul)
            else:
                self.ema.update(self.base_model)
        return total / self.accum

    def _warmup(self) -> None:
        """Run `warmup_steps` steps (compiling the graphs), then restore weights, optimizers and loader."""
        n = self.cfg.train.warmup_steps
        if n <= 0:
            return
        with self.clock.phase("warmup"):
            model_state = {k: v.detach().clone() for k, v in self.base_model.state_dict().items()}
            opt_states = [copy.deepcopy(opt.state_dict()) for opt in self.optimizers]
            loader_state = self.loader.state_dict()
            ema_state = self.ema.state_dict() if self.ema is not None else None
            lengths = sorted({n for _, n in self.seq_len_stages} | {self.cfg.train.train_seq_len})
            loops = (False, True) if self.cfg.model.num_loops > 0 else (False,)
            shapes = [(length, looping) for looping in loops for length in lengths]
            for step in range(max(n, len(shapes))):  # every graph the run will use: no recompiles later
                self.seq_len, looping = shapes[step * len(shapes) // max(n, len(shapes))]
                if self.cfg.model.num_loops > 0:
                    self.base_model.looping = looping
                self._step(step, 1.0)
            self.base_model.load_state_dict(model_state, strict=True)
            for opt, state in zip(self.optimizers, opt_states):
                opt.load_state_dict(state)
            self.loader.load_state_dict(loader_state)
            self.seq_len = self.cfg.train.train_seq_len
            if self.ema is not None:
                self.ema.load_state_dict(ema_state)
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
        self.log.line(f"warmup_steps:{n} restored weights, optimizer state and loader "
                      f"({self.clock.seconds['warmup']:.1f}s, not counted)")

    def _validate(self, step: int, train_ms: float) -> dict:
        cfg = self.cfg
        res = self.val.score(self.base_model, seq_len=cfg.train.train_seq_len, batch_tokens=cfg.train.val_batch_tokens,
                             device=self.ctx.device, ctx=self.ctx)
        avg = train_ms / max(step, 1)
        # A subset (train.val_max_tokens) is said on every line, so it is never mistaken for the full-val score.
        subset = "" if self.val.full else f" val_subset_tokens:{res.tokens}"
        self.log.line(f"step:{step}/{cfg.train.iterations} val_loss:{res.val_loss:.4f} val_bpb:{res.val_bpb:.4f}"
                      f"{subset} train_time:{train_ms:.0f}ms step_avg:{avg:.2f}ms")
        self.log.metric(step=step, val_loss=res.val_loss, val_bpb=res.val_bpb, time_s=train_ms / 1000,
                        val_tokens=res.tokens, full_val=self.val.full)
        return res.to_dict()

    # ------------------------------------------------------------------ the run
    def run(self) -> dict | None:
        """Train, export, score the artifact; returns result.json's content on rank 0 (None elsewhere)."""
        cfg, ctx = self.cfg, self.ctx
        sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
        self._warmup()
        t = cfg.train
        budget_s = self.train_budget_seconds()
        train_ms = 0.0
        stop_after: int | None = None
        pre_quant: dict | None = None
        step = 0
        if self.resume_from is not None:
            step, train_ms, stop_after, pre_quant = load_checkpoint(self)
        self._first_bad = torch.zeros((), dtype=torch.int64, device=ctx.device)  # first step with a non-finite loss
        handlers = self._catch_signals()
        try:
            step, train_ms, stop_after, pre_quant = self._train_loop(step, train_ms, stop_after, pre_quant,
                                                                     budget_s, sync)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        if self._flags_in_flight is not None:  # the last step's flags: nobody reads them (skipped on an error,
            ctx.wait(self._flags_in_flight[1], "flag all_reduce")  # when a dead peer would make it a second failure)
            self._flags_in_flight = None
        if self._signal is not None:  # arrived during the final validation: nothing resumable to add
            self._interrupted(step, write=False)
        self._guard_finite(step, params=True)  # what is exported (EMA/SWA swapped in) must be finite
        sync()
        self.clock.add("training", train_ms / 1000)
        if stop_after is not None and stop_after < t.iterations:
            self.log.line(f"stopping_early: wallclock_cap train_time:{train_ms:.0f}ms step:{step}/{t.iterations}")
        if ctx.device.type == "cuda":
            mib = torch.cuda.max_memory_allocated() // 2**20
            self.log.line(f"peak memory allocated: {mib} MiB")
        from pgolf.train.calibration import collect_hessians

        hessians, calibration = collect_hessians(self.base_model, self.loader, cfg, ctx, self.clock, self.log,
                                                 train_ms)  # GPTQ's Hessians, or None when the export needs none
        return export_and_score(self, step, train_ms, pre_quant, hessians, calibration)

    def _train_loop(self, step: int, train_ms: float, stop_after: int | None, pre_quant: dict | None,
                    budget_s: float, sync) -> tuple[int, float, int | None, dict | None]:
        """Steps until `iterations` or the wall clock, validating on the way; returns the loop's final
        (step, train_ms, stop_after, pre_quant)."""
        from pgolf.optim.schedule import lr_multiplier, training_progress, wd_taper

        cfg, ctx, t = self.cfg, self.ctx, self.cfg.train
        sync()
        t0 = time.perf_counter()
        while True:
            last = step == t.iterations or (stop_after is not None and step >= stop_after)
            if last and self.ema is not None:
                self.ema.copy_to(self.base_model)  # the averaged weights are what gets validated and exported
            elapsed_s = (train_ms + 1000 * (time.perf_counter() - t0)) / 1000
            progress = training_progress(step, elapsed_s, budget_s, t.iterations)
            if self.seq_len_stages:
                from pgolf.optim.schedule import seq_len_at
                self.seq_len = seq_len_at(progress, self.seq_len_stages, t.train_seq_len, t.seq_len_full_frac)
            if self.qat_layers:
                from pgolf.quant.qat import set_qat_active
                set_qat_active(self.base_model, progress >= cfg.quant.qat_start_frac)
            if cfg.model.num_loops > 0:
                # Depth recurrence starts at loop_start_frac of the budget; the final model is scored looped.
                self.base_model.looping = last or progress >= cfg.model.loop_start_frac
            if self.val is not None and (last or (t.val_loss_every > 0 and step % t.val_loss_every == 0)):
                sync()
                train_ms += 1000 * (time.perf_counter() - t0)
                with self.clock.phase("validation"):
                    pre_quant = self._validate(step, train_ms)
                sync()
                t0 = time.perf_counter()
            if last:
                if self.val is None:
                    sync()
                    train_ms += 1000 * (time.perf_counter() - t0)
                break
            elapsed_s = (train_ms + 1000 * (time.perf_counter() - t0)) / 1000
            lr_mul = lr_multiplier(step, elapsed_s, budget_s, t.iterations, t.warmdown_iters,
                                   t.warmdown_frac, t.min_lr)
            loss = self._step(step, lr_mul, wd_taper(progress) if cfg.optim.muon_wd_taper else 1.0)
            step += 1
            self._first_bad = torch.where((self._first_bad == 0) & ~torch.isfinite(loss.detach()), step,
                                          self._first_bad)
            log_now = t.train_log_every > 0 and (step <= 10 or step % t.train_log_every == 0)
            if log_now:
                mean_loss = ctx.all_reduce_sum(loss.detach().clone()) / ctx.world_size
                approx_ms = train_ms + 1000 * (time.perf_counter() - t0)
                loss_value = float(mean_loss.item())
                self.log.line(f"step:{step}/{t.iterations} train_loss:{loss_value:.4f} "
                              f"train_time:{approx_ms:.0f}ms step_avg:{approx_ms / step:.2f}ms")
                self.log.metric(step=step, train_loss=loss_value, time_s=approx_ms / 1000, lr_mul=lr_mul)
            approx_ms = train_ms + 1000 * (time.perf_counter() - t0)
            reached = budget_s > 0 and approx_ms >= 1000 * budget_s
            reached, signalled = self._agree(reached and stop_after is None, self._signal is not None)
            if reached:
                stop_after = step
            save = signalled or (t.checkpoint_every > 0 and step % t.checkpoint_every == 0)
            # The loss is checked on CPU every step (free) and on CUDA where the step syncs anyway.
            if save or log_now or ctx.device.type != "cuda":
                self._guard_finite(step, params=save)
            if save:
                sync()
                train_ms += 1000 * (time.perf_counter() - t0)
                save_checkpoint(self, step, train_ms, stop_after, pre_quant)
                if signalled:
                    self._interrupted(step)
                sync()
                t0 = time.perf_counter()
        return step, train_ms, stop_after, pre_quant

    # ------------------------------------------------------------------ reliability: signals, NaN guard
    def _catch_signals(self) -> dict:
        """SIGINT/SIGTERM during training: finish the step, write a checkpoint, stop. A second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame) -> None:
            if self._signal is not None:
                raise KeyboardInterrupt
            self._signal = signum

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def _agree(self, reached: bool, signalled: bool) -> tuple[bool, bool]:
        """Every rank's view of (wall clock reached, signal caught), read one step late so no step waits for it:
        the flags of step k are all-reduced in the background on a CPU (gloo) group, never touching the GPU stream,
        and every rank reads them at step k + 1, so all ranks stop after the same step."""
        if not self.ctx.distributed:
            return reached, signalled
        import torch.distributed as dist

        flags = torch.tensor([float(reached), float(signalled)])
        previous = self._flags_in_flight
        self._flags_in_flight = (flags, dist.all_reduce(flags, op=dist.ReduceOp.MAX, group=self._flag_group,
                                                        async_op=True))
        if previous is None:
            return False, False
        self.ctx.wait(previous[1], "flag all_reduce")
        reached_any, signalled_any = previous[0].tolist()
        if signalled_any and self._signal is None:
            self._signal = int(signal.SIGTERM)
        return reached_any > 0, signalled_any > 0

    def _interrupted(self, step: int, write: bool = True) -> None:
        name = signal.Signals(self._signal).name
        where = (f"checkpoint {self.run_dir / ckpt.MANIFEST} (step {self.last_checkpoint[0]})"
                 if self.last_checkpoint else "no checkpoint")
        message = (f"interrupted by {name} at step:{step}/{self.cfg.train.iterations}; {where}; continue with: "
                   f"pgolf train --resume {self.run_dir} --data {self.data_dir}")
        if not write and self.last_checkpoint is None:
            message = f"interrupted by {name} after training, during the final validation; nothing to resume"
        self.log.line(message)
        raise TrainingInterrupted(message, self._signal)

    def _guard_finite(self, step: int, params: bool, loss: bool = True) -> None:
        """Stop with TrainingDiverged if a training loss so far (`loss`) or a parameter (`params`) is non-finite;
        the message names the step and the parameter groups (pgolf.optim.groups roles) that hold NaN/Inf."""
        from pgolf.optim.groups import parameter_roles

        first_bad = int(self.ctx.all_reduce_max(self._first_bad.clone()).item()) if loss else 0
        bad_params: dict[str, list[str]] = {}
        if params or first_bad:
            named = list(self.base_model.named_parameters())
            finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named]).cpu().tolist()
            roles = parameter_roles(self.base_model)
            for (name, _), ok in zip(named, finite):
                if not ok:
                    bad_params.setdefault(roles[name], []).append(name)
            if self.ctx.any(bool(bad_params)) and not bad_params:
                bad_params = {"(on another rank)": []}
        if not first_bad and not bad_params:
            return
        what = (f"non-finite train_loss at step:{first_bad}/{self.cfg.train.iterations}" if first_bad
                else f"non-finite parameters after step:{step}/{self.cfg.train.iterations}")
        groups = "; ".join(f"group {role}: {', '.join(names[:3])}{f' (+{len(names) - 3} more)' if len(names) > 3 else ''}"
                           for role, names in sorted(bad_params.items()))
        where = (f"the last good checkpoint is step {self.last_checkpoint[0]} ({self.run_dir / ckpt.MANIFEST})"
                 if self.last_checkpoint else "no checkpoint was written before it")
        message = (f"training diverged: {what}; " + (f"non-finite parameters in {groups}" if groups else
                   "parameters still finite") + f"; no artifact written; {where}")
        self.log.line(message)
        raise TrainingDiverged(message)

    # ------------------------------------------------------------------ the clock
    def train_budget_seconds(self) -> float:
        """The training clock: the wall-clock cap minus the time reserved for GPTQ calibration on training data
        (which must happen inside the 600 s, docs/rules.md#eval-time-limit)."""
        from pgolf.train.calibration import calibrates_on_train

        t, q = self.cfg.train, self.cfg.quant
        if t.max_wallclock_seconds > 0 and calibrates_on_train(q):
            return max(1e-3, t.max_wallclock_seconds - q.gptq_reserve_seconds)
        return t.max_wallclock_seconds


def train(cfg: Config, data_dir: str | Path, run_dir: str | Path, *, env: LaunchEnv | None = None,
          echo: TextIO | None = STDOUT, existing: str = "overwrite") -> dict | None:
    """Train `cfg` on `data_dir`, write the run directory, and return result.json's content (rank 0).
    `existing`: refuse / overwrite / resume what `run_dir` already holds (see `Trainer`)."""
    trainer = Trainer(cfg, data_dir, run_dir, env=env, echo=echo, existing=existing)
    try:
        return trainer.run()
    finally:
        trainer.log.close()
        trainer.ctx.shutdown()
