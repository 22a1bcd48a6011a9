"""What pgolf decides about NCCL failures, checked on CPU (docs/RELIABILITY.md#dead-and-hung-ranks): the NCCL
settings fixed before the process group starts, the one line for a collective whose peer is gone wherever it is
raised, and no teardown of a broken group. How NCCL itself behaves is test_rank_death_nccl.py's (two GPUs)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import torch
import torch.distributed as dist

from pgolf import cli, runtime
from pgolf.runtime import LaunchEnv
from pgolf.errors import PgolfError
from pgolf.runtime import DistContext, NCCL_ENV_DEFAULTS, collective_failure, init_distributed, nccl_env_defaults

GLOO_RESET = ("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:54460: Connection "
              "reset by peer. This is typically caused by a remote worker hanging")


@pytest.fixture
def rank1_of_2(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")


def test_nccl_defaults_fill_only_what_is_unset():
    env: dict[str, str] = {}
    assert nccl_env_defaults(env) == NCCL_ENV_DEFAULTS == env
    assert env["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "3" and env["TORCH_NCCL_DUMP_ON_TIMEOUT"] == "0"
    torchrun = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "TORCH_NCCL_DUMP_ON_TIMEOUT": "1"}  # torchrun's, a user's
    assert nccl_env_defaults(torchrun) == {} and torchrun["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "1"


def _fake_group(monkeypatch, device: str) -> dict:
    """init_process_group and the device choice replaced: records the backend, timeout and the NCCL variables as
    they are when the group would start."""
    seen: dict = {}

    def init(backend, timeout, **kwargs):
        import os
        seen.update(backend=backend, timeout=timeout, env={k: os.environ.get(k) for k in NCCL_ENV_DEFAULTS})

    for key in NCCL_ENV_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", init)
    monkeypatch.setattr(runtime, "choose_device", lambda pref, local_rank=0, setting="": torch.device(device, 0)
                        if device == "cuda" else torch.device("cpu"))
    return seen


def test_nccl_group_starts_with_the_defaults_set(monkeypatch):
    seen = _fake_group(monkeypatch, "cuda")
    monkeypatch.setenv("PGOLF_DIST_TIMEOUT", "7")
    ctx = init_distributed(LaunchEnv(rank=0, world_size=2, local_rank=0), "cuda")
    assert seen == {"backend": "nccl", "timeout": timedelta(seconds=7), "env": NCCL_ENV_DEFAULTS}
    assert ctx.distributed and ctx.device.type == "cuda"


def test_gloo_group_leaves_the_nccl_variables_alone(monkeypatch):
    seen = _fake_group(monkeypatch, "cpu")
    init_distributed(LaunchEnv(rank=0, world_size=2, local_rank=0), "cpu")
    assert seen["backend"] == "gloo" and seen["env"] == {k: None for k in NCCL_ENV_DEFAULTS}


@pytest.mark.parametrize("exc", [dist.DistBackendError("NCCL communicator was aborted on rank 0."),
                                 RuntimeError(GLOO_RESET), dist.DistNetworkError("Connection closed by peer")])
def test_a_collective_failure_is_one_line_naming_the_rank(rank1_of_2, exc):
    failure = collective_failure(exc)
    assert isinstance(failure, PgolfError) and "\n" not in str(failure)
    line = str(failure)
    assert line.startswith("rank 1/2: a collective failed: another rank exited or stopped answering")
    assert "pgolf train --resume RUN_DIR" in line


def test_other_errors_are_not_collective_failures(rank1_of_2, monkeypatch):
    assert collective_failure(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert collective_failure(ValueError("NCCL error")) is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert collective_failure(dist.DistBackendError("NCCL error")) is None  # no process group: not this


def test_cli_turns_a_stray_collective_failure_into_one_line(rank1_of_2, monkeypatch, capsys):
    """A DDP bucket or a Muon reduction raises outside DistContext: still one line, exit 2."""
    def dies(args):
        raise dist.DistBackendError("NCCL error in: ProcessGroupNCCL.cpp:1234, remote process exited or there was "
                                    "a network error\nLast error: socket closed")

    monkeypatch.setattr(cli, "_cmd_presets", dies)
    assert cli.main(["presets"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pgolf: error: rank 1/2: a collective failed"), err


def test_cli_keeps_the_traceback_of_a_bug(rank1_of_2, monkeypatch):
    def bug(args):
        raise RuntimeError("index 3 is out of bounds")

    monkeypatch.setattr(cli, "_cmd_presets", bug)
    with pytest.raises(RuntimeError, match="out of bounds"):
        cli.main(["presets"])


def test_collective_wrapper_says_what_to_do(monkeypatch):
    ctx = DistContext(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))

    def broken():
        raise RuntimeError(GLOO_RESET)

    with pytest.raises(PgolfError) as info:
        ctx._collective("all_reduce", broken)
    line = str(info.value)
    assert line.startswith("rank 0/2: all_reduce failed: another rank exited or stopped answering (")
    assert "pgolf train --resume RUN_DIR --data DATA_DIR" in line and "\n" not in line


def _shutdown_calls(monkeypatch) -> list:
    calls: list = []
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: calls.append("destroyed"))
    return calls


def test_a_broken_group_is_not_torn_down(rank1_of_2, monkeypatch):
    calls = _shutdown_calls(monkeypatch)
    ctx = DistContext(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    ctx.shutdown()
    assert calls == ["destroyed"]  # a healthy group is
    calls.clear()
    try:  # as the trainer's `finally: ctx.shutdown()` sees an error raised by DDP
        try:
            raise dist.DistBackendError("NCCL communicator was aborted")
        finally:
            ctx.shutdown()
    except dist.DistBackendError:
        pass
    assert calls == []
    with pytest.raises(PgolfError):
        ctx._collective("barrier", lambda: (_ for _ in ()).throw(RuntimeError(GLOO_RESET)))
    ctx.shutdown()
    assert calls == []


def test_waiting_on_an_async_collective_gives_the_same_line():
    """For the trainer's flag all-reduce on its gloo side group (`DistContext.wait`)."""
    class Work:
        def wait(self):
            raise RuntimeError(GLOO_RESET)

    ctx = DistContext(rank=1, world_size=2, local_rank=1, device=torch.device("cpu"))
    with pytest.raises(PgolfError, match=r"^rank 1/2: flag all_reduce failed: another rank exited.*--resume"):
        ctx.wait(Work(), "flag all_reduce")
    assert ctx._collectives == 0 and ctx._failed
