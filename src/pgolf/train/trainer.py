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

Gradient accumulation keeps the global batch at `train_batch_tokens` for every world size (see TrainConfig). How the
gradients are reduced, clipped and applied, and the weight average, belong to one GradSync (pgolf/train/sync.py);
where the run is belongs to one RunState (pgolf/train/state.py), which checkpointing and the export are handed.
"""

from __future__ import annotations

import copy
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import torch
import torch.distributed as dist

import pgolf
from pgolf.config import Config
from pgolf.data.loader import make_loader
from pgolf.data.manifest import check_data_dir
from pgolf.errors import PgolfError
from pgolf.eval.evaluate import ValidationData, final_score_tokens
from pgolf.fileio import atomic_write_json
from pgolf.model.gpt import GPT
from pgolf.model.kernels import wanted
from pgolf.model.precision import body_dtype, cast_body
from pgolf.optim.groups import build_optimizers, parameter_roles
from pgolf.optim.schedule import (lr_multiplier, parse_seq_len_schedule, rewarm_multiplier, seq_len_at,
                                  training_progress, wd_taper)
from pgolf.quant.qat import configure_qat, set_qat_active
from pgolf.runtime import DistContext, LaunchEnv, PhaseClock, autocast_for, init_distributed, launch_env, should_compile
from pgolf.train import checkpoint as ckpt
from pgolf.train.calibration import calibrate, calibrates_on_train, probe_calibration, reserve_seconds
from pgolf.train.export import export_and_score
from pgolf.train.resume import check_resume, load_checkpoint, save_checkpoint
from pgolf.train.runlog import STDOUT, RunLog, check_tracking
from pgolf.train.state import RunParts, RunState
from pgolf.train.sync import GradSync
TOTAL_TRAIN_SHARE = 0.75  # of train.max_total_seconds, until training stops; the rest is calibration, export, scoring
EXISTING = ("refuse", "overwrite", "resume")  # what `Trainer(existing=...)` does with a run directory's old content


class TrainingInterrupted(PgolfError):
    """SIGINT or SIGTERM stopped training after a checkpoint was written; `signum` is the signal."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class TrainingDiverged(PgolfError):
    """The training loss or a parameter became NaN or infinite; nothing after the last good checkpoint is kept."""


class Trainer:
    """Holds the model, optimizers, gradient sync, loader and run state of one run; `run()` does steps 2-4 of the
    module docstring."""

    def __init__(self, cfg: Config, data_dir: str | Path, run_dir: str | Path, *, env: LaunchEnv | None = None,
                 echo: TextIO | None = STDOUT, existing: str = "overwrite") -> None:
        """`existing`: refuse a non-empty run directory, overwrite what an earlier run wrote there, or resume the
        run whose checkpoint it holds (`cfg` must then be that run's config)."""
        self.start_time = time.perf_counter()
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.run_dir = Path(run_dir)
        if existing not in EXISTING:
            raise ValueError(f"existing={existing!r} is not one of {EXISTING}")
        if cfg.train.checkpoint_every < 0:
            raise PgolfError(f"config: train.checkpoint_every={cfg.train.checkpoint_every} must be >= 0 (0 = only on "
                             "SIGINT/SIGTERM)")
        check_tracking(cfg)  # a missing optional package (TensorBoard, W&B): one line, before anything is written
        self.ctx: DistContext = init_distributed(env or launch_env(), cfg.train.device)
        # Host-side flags (wall clock reached, signal caught) travel on a CPU group, read one step late (`_agree`).
        self._flag_group = torch.distributed.new_group(backend="gloo") if self.ctx.distributed else None
        self._flags_in_flight = None
        device = self.ctx.device
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.clock = PhaseClock(sync=torch.cuda.synchronize if device.type == "cuda" else None)
        self.accum = cfg.grad_accum_steps(self.ctx.world_size)
        problem = ckpt.run_dir_problem(self.run_dir, existing) if self.ctx.is_main else None
        if self.ctx.any(problem is not None):
            raise PgolfError(problem or f"run directory {self.run_dir} cannot be used (rank 0 says why)")
        self.manifest, self.tokenizer_path = check_data_dir(self.data_dir, expected_vocab=cfg.model.vocab_size)
        self.resume_from = (check_resume(self.run_dir, cfg, self.ctx.world_size, self.data_dir, self.manifest)
                            if existing == "resume" else None)
        self.state = RunState(seq_len=cfg.train.train_seq_len)
        self.reserve: dict | None = None  # what the clock keeps for calibration on training data (`_reserve`)
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
        cast_body(self.base_model, body_dtype(cfg.train.body_dtype, device))  # bf16 tables on CUDA (official)
        self.base_model.use_kernels(wanted(cfg.train.kernels, device))
        self.seq_len_stages = parse_seq_len_schedule(cfg.train.seq_len_schedule, cfg.train.train_seq_len,
                                                    cfg.train.micro_batch_tokens)
        self.qat_layers = 0
        if cfg.quant.qat_bits:
            self.qat_layers = configure_qat(self.base_model, cfg.quant)  # before compile: the flag is a buffer
        model: torch.nn.Module = self.base_model
        if should_compile(cfg.train.compile, device):
            model = torch.compile(model, dynamic=False, fullgraph=True)
        self.optimizers = build_optimizers(self.base_model, cfg.optim)
        self.sync = GradSync(self.base_model, model, self.optimizers, cfg.optim, self.ctx)  # wraps DDP if needed
        self.loader = make_loader(cfg, self.data_dir, self.ctx.rank, self.ctx.world_size, pin=device.type == "cuda")
        self.parts = RunParts(self.base_model, self.optimizers, self.sync, self.loader)
        self.val = None
        if cfg.train.val_loss_every > 0:
            self.val = ValidationData(self.data_dir, cfg.model.vocab_size, max_tokens=cfg.train.val_max_tokens)
        self.log.track(cfg, self.run_dir, self.resume_from["step"] if self.resume_from else None)  # rank 0
        self.clock.add("startup", time.perf_counter() - self.start_time)
        n_params = sum(p.numel() for p in self.base_model.parameters())
        self.log.line(f"pgolf {pgolf.__version__} preset:{cfg.preset} params:{n_params} world_size:{self.ctx.world_size} "
                      f"grad_accum_steps:{self.accum} device:{device.type} seed:{cfg.train.seed}")
        self.log.line(f"data:{self.data_dir} train_tokens:{self.manifest['splits']['train']['tokens']} "
                      f"val_tokens:{self.manifest['splits']['val']['tokens']}")
        if self.val is not None and not self.val.full:
            final = final_score_tokens(cfg.eval.max_tokens, device)
            final_part = (f"the first {final:,} (eval.max_tokens)" if 0 < final < self.manifest["splits"]["val"]["tokens"]
                          else "the whole val split")
            self.log.line(f"periodic validation scores the first {len(self.val.tokens)} val tokens only "
                          f"(train.val_max_tokens); the final score uses {final_part}")
        self.n_params = n_params

    # ------------------------------------------------------------------ one optimizer step
    def _step(self, step: int, lr_mul: float, wd_mul: float = 1.0) -> torch.Tensor:
        """One optimizer step over `accum` micro-batches; returns the mean training loss (a tensor, not synced)."""
        cfg, device, sync = self.cfg, self.ctx.device, self.sync
        sync.zero_grad()
        total = torch.zeros((), device=device)
        for micro in range(self.accum):
            x, y, segments = self.loader.next_batch(cfg.train.train_batch_tokens, self.state.seq_len, self.accum)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            segments = segments.to(device) if segments is not None else None
            with sync.micro_step(last=micro == self.accum - 1):
                with autocast_for(device):
                    loss = sync.model(x, y, segments=segments)
                (loss / self.accum).backward()
            total += loss.detach()
        sync.step(step, lr_mul, wd_mul)
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
            average_state = self.sync.state_dict()
            lengths = sorted({n for _, n in self.seq_len_stages} | {self.cfg.train.train_seq_len})
            loops = (False, True) if self.cfg.model.num_loops > 0 else (False,)
            shapes = [(length, looping) for looping in loops for length in lengths]
            for step in range(max(n, len(shapes))):  # every graph the run will use: no recompiles later
                self.state.seq_len, looping = shapes[step * len(shapes) // max(n, len(shapes))]
                if self.cfg.model.num_loops > 0:
                    self.base_model.set_looping(looping)
                self._step(step, 1.0)
            self.base_model.load_state_dict(model_state, strict=True)
            for opt, state in zip(self.optimizers, opt_states):
                opt.load_state_dict(state)
            self.loader.load_state_dict(loader_state)
            self.state.seq_len = self.cfg.train.train_seq_len
            self.sync.load_state_dict(average_state)
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
        cfg, ctx, state = self.cfg, self.ctx, self.state
        sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
        self._warmup()
        t = cfg.train
        self.reserve = self._reserve(sync)
        budget_s = self.train_budget_seconds()
        self.deadline = self._command_deadline()
        self._last_step_end: float | None = None
        if self.resume_from is not None:
            load_checkpoint(self.resume_from, state, self.parts, cfg=cfg, ctx=ctx, run_dir=self.run_dir,
                            clock=self.clock, log=self.log)
        self._first_bad = torch.zeros((), dtype=torch.int64, device=ctx.device)  # first step with a non-finite loss
        handlers = self._catch_signals()
        try:
            self._train_loop(budget_s, sync)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        if self._flags_in_flight is not None:  # the last step's flags: nobody reads them (skipped on an error,
            ctx.wait(self._flags_in_flight[1], "flag all_reduce")  # when a dead peer would make it a second failure)
            self._flags_in_flight = None
        if self._signal is not None:  # arrived during the final validation: nothing resumable to add
            self._interrupted(state.step, write=False)
        self._guard_finite(state.step, params=True)  # what is exported (EMA/SWA swapped in) must be finite
        sync()
        self.clock.add("training", state.train_ms / 1000)
        if state.stop_after is not None and state.stop_after < t.iterations:
            by_clock = t.max_wallclock_seconds > 0 and state.train_ms >= 1000 * budget_s
            cap = "wallclock_cap" if by_clock else "command_budget"
            self.log.line(f"stopping_early: {cap} train_time:{state.train_ms:.0f}ms step:{state.step}/{t.iterations}")
        if ctx.device.type == "cuda":
            mib = torch.cuda.max_memory_allocated() // 2**20
            self.log.line(f"peak memory allocated: {mib} MiB")
        calib = calibrate(self.base_model, self.loader, cfg, ctx, self.clock, self.log, state.train_ms,
                          self.reserve)  # GPTQ's Hessians, or None when none is needed
        return export_and_score(self.base_model, state, cfg=cfg, ctx=ctx, run_dir=self.run_dir,
                                data_dir=self.data_dir, data_manifest=self.manifest, clock=self.clock, log=self.log,
                                n_params=self.n_params, hessians=calib.hessians, calibration=calib.report,
                                act_rms=calib.act_rms, started=self.start_time)

    def _train_loop(self, budget_s: float, sync) -> None:
        """Steps until `iterations` or the wall clock, validating on the way; advances `self.state`."""
        cfg, ctx, t, state = self.cfg, self.ctx, self.cfg.train, self.state
        sync()
        t0 = time.perf_counter()
        while True:
            step = state.step
            last = step == t.iterations or (state.stop_after is not None and step >= state.stop_after)
            if last:
                self.sync.swap_in_average()  # the averaged weights are what gets validated and exported
            elapsed_s = (state.train_ms + 1000 * (time.perf_counter() - t0)) / 1000
            progress = training_progress(step, elapsed_s, budget_s, t.iterations)
            if self.seq_len_stages:
                seq_len = seq_len_at(progress, self.seq_len_stages, t.train_seq_len, t.seq_len_full_frac)
                if seq_len != state.seq_len:
                    self.log.line(f"seq_len:{seq_len} step:{step} progress:{progress:.3f}")
                    if step > 0:
                        state.seq_changed_at = step
                state.seq_len = seq_len
            if self.qat_layers:
                set_qat_active(self.base_model, progress >= cfg.quant.qat_start_frac)
            if cfg.model.num_loops > 0:
                # Depth recurrence starts at loop_start_frac of the budget; the final model is scored looped.
                self.base_model.set_looping(last or progress >= cfg.model.loop_start_frac)
            if self.val is not None and (last or (t.val_loss_every > 0 and step % t.val_loss_every == 0)):
                sync()
                state.train_ms += 1000 * (time.perf_counter() - t0)
                with self.clock.phase("validation"):
                    state.pre_quant = self._validate(step, state.train_ms)
                sync()
                t0 = time.perf_counter()
            if last:
                if self.val is None:
                    sync()
                    state.train_ms += 1000 * (time.perf_counter() - t0)
                break
            elapsed_s = (state.train_ms + 1000 * (time.perf_counter() - t0)) / 1000
            lr_mul = lr_multiplier(step, elapsed_s, budget_s, t.iterations, t.warmdown_iters,
                                   t.warmdown_frac, t.min_lr)
            lr_mul *= rewarm_multiplier(step, state.seq_changed_at, t.seq_change_warmup_steps)
            loss = self._step(step, lr_mul, wd_taper(progress) if cfg.optim.muon_wd_taper else 1.0)
            step = state.step = step + 1
            self._first_bad = torch.where((self._first_bad == 0) & ~torch.isfinite(loss.detach()), step,
                                          self._first_bad)
            log_now = t.train_log_every > 0 and (step <= 10 or step % t.train_log_every == 0)
            if log_now:
                mean_loss = ctx.all_reduce_sum(loss.detach().clone()) / ctx.world_size
                approx_ms = state.train_ms + 1000 * (time.perf_counter() - t0)
                loss_value = float(mean_loss.item())
                self.log.line(f"step:{step}/{t.iterations} train_loss:{loss_value:.4f} "
                              f"train_time:{approx_ms:.0f}ms step_avg:{approx_ms / step:.2f}ms")
                self.log.metric(step=step, train_loss=loss_value, time_s=approx_ms / 1000, lr_mul=lr_mul)
            approx_ms = state.train_ms + 1000 * (time.perf_counter() - t0)
            reached = (budget_s > 0 and approx_ms >= 1000 * budget_s) or self._next_step_misses_deadline()
            reached, signalled = self._agree(reached and state.stop_after is None, self._signal is not None)
            if reached:
                state.stop_after = step
            save = signalled or (t.checkpoint_every > 0 and step % t.checkpoint_every == 0)
            # The loss is checked on CPU every step (free) and on CUDA where the step syncs anyway.
            if save or log_now or ctx.device.type != "cuda":
                self._guard_finite(step, params=save)
            if save:
                sync()
                state.train_ms += 1000 * (time.perf_counter() - t0)
                save_checkpoint(state, self.parts, cfg=cfg, ctx=ctx, run_dir=self.run_dir,
                                data_manifest=self.manifest, clock=self.clock, log=self.log)
                if signalled:
                    self._interrupted(step)
                sync()
                t0 = time.perf_counter()

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
        last_checkpoint = self.state.last_checkpoint
        where = (f"checkpoint {self.run_dir / ckpt.MANIFEST} (step {last_checkpoint[0]})"
                 if last_checkpoint else "no checkpoint")
        message = (f"interrupted by {name} at step:{step}/{self.cfg.train.iterations}; {where}; continue with: "
                   f"pgolf train --resume {self.run_dir} --data {self.data_dir}")
        if not write and last_checkpoint is None:
            message = f"interrupted by {name} after training, during the final validation; nothing to resume"
        self.log.line(message)
        raise TrainingInterrupted(message, self._signal)

    def _guard_finite(self, step: int, params: bool, loss: bool = True) -> None:
        """Stop with TrainingDiverged if a training loss so far (`loss`) or a parameter (`params`) is non-finite;
        the message names the step and the parameter groups (pgolf.optim.groups roles) that hold NaN/Inf."""
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
        last_checkpoint = self.state.last_checkpoint
        where = (f"the last good checkpoint is step {last_checkpoint[0]} ({self.run_dir / ckpt.MANIFEST})"
                 if last_checkpoint else "no checkpoint was written before it")
        message = (f"training diverged: {what}; " + (f"non-finite parameters in {groups}" if groups else
                   "parameters still finite") + f"; no artifact written; {where}")
        self.log.line(message)
        raise TrainingDiverged(message)

    # ------------------------------------------------------------------ the clock
    def train_budget_seconds(self) -> float:
        """The training clock: the wall-clock cap minus the time reserved for GPTQ calibration on training data
        (which must happen inside the 600 s, docs/rules.md#eval-time-limit): `self.reserve` once `run` has set it,
        `quant.gptq_reserve_seconds` before."""
        t, q = self.cfg.train, self.cfg.quant
        if t.max_wallclock_seconds > 0 and calibrates_on_train(q):
            kept = self.reserve["seconds"] if self.reserve is not None else q.gptq_reserve_seconds
            return max(1e-3, t.max_wallclock_seconds - kept)
        return t.max_wallclock_seconds

    def _next_step_misses_deadline(self) -> bool:
        """Whether another step, as long as the last one, would end past the command deadline (the training
        clock instead stops after the step that reaches it, as the official script does)."""
        now = time.perf_counter()
        last, self._last_step_end = now - (self._last_step_end or now), now
        return self.deadline is not None and now + last >= self.deadline

    def _command_deadline(self) -> float | None:
        """`train.max_total_seconds` as a `perf_counter` time at which training stops: TOTAL_TRAIN_SHARE of the
        budget from the trainer's start (start-up and warm-up included), the rest left for calibration, export and
        the final score (on CPU a bounded val subset, eval.max_tokens). None when the run has no such bound."""
        total = self.cfg.train.max_total_seconds
        if total <= 0:
            return None
        training = TOTAL_TRAIN_SHARE * total
        deadline = self.start_time + training
        left = max(deadline - time.perf_counter(), 0.0)
        self.log.line(f"command_budget: {total:.0f}s (train.max_total_seconds): training stops {training:.0f}s after "
                      f"the start ({left:.1f}s from now, validations included), leaving {total - training:.0f}s for "
                      "calibration, export and scoring")
        return deadline

    def _reserve(self, sync) -> dict | None:
        """What the clock keeps for calibration on training data under a wall-clock cap ({"mode", "seconds"} and,
        measured, the probe's timings; pgolf/train/calibration.py), None when nothing is kept. The probe runs
        before the clock, like the warm-up."""
        t, q = self.cfg.train, self.cfg.quant
        if not (t.max_wallclock_seconds > 0 and calibrates_on_train(q)):
            return None
        reserve: dict = {"mode": q.calib_reserve}
        estimate = None
        if q.calib_reserve == "measured":
            with self.clock.phase("calibration_probe"):
                probe = probe_calibration(self.base_model, self.loader, self.cfg, self.ctx, sync)
            estimate, reserve["probe"] = probe["estimate"], probe
        reserve["seconds"] = round(reserve_seconds(q, estimate), 4)
        self.log.line(f"calib_reserve: {q.calib_reserve}, keeping {reserve['seconds']:.2f}s for GPTQ calibration"
                      + (f" (probe: {q.calib_batches} batches ~{estimate:.2f}s)" if estimate is not None else ""))
        return reserve


def train(cfg: Config, data_dir: str | Path, run_dir: str | Path, *, env: LaunchEnv | None = None,
          echo: TextIO | None = STDOUT, existing: str = "overwrite") -> dict | None:
    """Train `cfg` on `data_dir`, write the run directory, and return result.json's content (rank 0).
    `existing`: refuse / overwrite / resume what `run_dir` already holds (see `Trainer`)."""
    trainer = Trainer(cfg, data_dir, run_dir, env=env, echo=echo, existing=existing)
    try:
        return trainer.run()
    finally:
        trainer.log.close(failed=sys.exc_info()[0] is not None)  # finishes the trackers (a W&B run as failed)
        trainer.ctx.shutdown()
