"""The official scripts' environment variables, for a bundled `train_gpt.py` run with no arguments.

The official `train_gpt.py` and the records' scripts take their settings from environment variables (`DATA_PATH`,
`TOKENIZER_PATH`, `RUN_ID`, `SEED`, `ITERATIONS`, `MAX_WALLCLOCK_SECONDS`, `VOCAB_SIZE`, ...), and the official
process runs them from inside a records folder with no arguments. A pgolf bundle does the same
(`pgolf.cli.train_main`): every official name maps to its pgolf field (`OFFICIAL_FIELDS`), and so does any variable
spelled as a pgolf field name in capitals when only one config section has that name (`XSA_LAST_N`, `NUM_LOOPS`,
`EMA_DECAY`, as the records spell them); a `[ttt]` field is `TTT_<FIELD>` (`TTT_RANK`, `TTT_LR`), never the bare
name, which torchrun's `RANK` or a generic `LR` would otherwise set. The official names that have no pgolf
equivalent (`UNSUPPORTED`) are an error, not silence. Other variables (PATH, HOME, ...) are not settings and are left
alone.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from pgolf.config import SECTIONS, Config
from pgolf.errors import PgolfError

# The official baseline's hyperparameter variables (train_gpt.py's Hyperparameters) and their pgolf fields.
OFFICIAL_FIELDS = {
    "SEED": "train.seed", "ITERATIONS": "train.iterations", "MAX_WALLCLOCK_SECONDS": "train.max_wallclock_seconds",
    "TRAIN_BATCH_TOKENS": "train.train_batch_tokens", "TRAIN_SEQ_LEN": "train.train_seq_len",
    "WARMUP_STEPS": "train.warmup_steps", "WARMDOWN_ITERS": "train.warmdown_iters",
    "VAL_LOSS_EVERY": "train.val_loss_every", "TRAIN_LOG_EVERY": "train.train_log_every",
    "VAL_BATCH_SIZE": "train.val_batch_tokens",
    "VOCAB_SIZE": "model.vocab_size", "NUM_LAYERS": "model.num_layers", "MODEL_DIM": "model.model_dim",
    "NUM_HEADS": "model.num_heads", "NUM_KV_HEADS": "model.num_kv_heads", "MLP_MULT": "model.mlp_mult",
    "TIE_EMBEDDINGS": "model.tie_embeddings", "TIED_EMBED_INIT_STD": "model.tied_embed_init_std",
    "ROPE_BASE": "model.rope_base", "LOGIT_SOFTCAP": "model.logit_softcap", "QK_GAIN_INIT": "model.qk_gain_init",
    "MATRIX_LR": "optim.matrix_lr", "SCALAR_LR": "optim.scalar_lr", "TIED_EMBED_LR": "optim.tied_embed_lr",
    "EMBED_LR": "optim.embed_lr", "HEAD_LR": "optim.head_lr", "BETA1": "optim.beta1", "BETA2": "optim.beta2",
    "ADAM_EPS": "optim.adam_eps", "MUON_MOMENTUM": "optim.muon_momentum",
    "MUON_MOMENTUM_WARMUP_START": "optim.muon_momentum_warmup_start",
    "MUON_MOMENTUM_WARMUP_STEPS": "optim.muon_momentum_warmup_steps",
    "MUON_BACKEND_STEPS": "optim.muon_backend_steps", "GRAD_CLIP_NORM": "optim.grad_clip_norm",
}
# Official variables that are not settings of a pgolf field, and why.
UNSUPPORTED = {
    "CONTROL_TENSOR_NAME_PATTERNS": "pgolf's control tensors are their roles (pgolf/model/roles.py)",
    "INT8_KEEP_FLOAT_FP32_NAME_PATTERNS": "pgolf's int8 export keeps the control tensors in float32 by name",
}
OFFICIAL_DATA_PATH = "./data/datasets/fineweb10B_sp1024"  # the official script's defaults
OFFICIAL_TOKENIZER_PATH = "./data/tokenizers/fineweb_1024_bpe.model"


@dataclass(frozen=True)
class OfficialRun:
    """What the environment asks for: the data folder, its tokenizer, the run name and the config overrides."""

    data: Path
    tokenizer: Path | None
    run_id: str | None
    sets: list[str]


PREFIXED_SECTIONS = {"ttt": "TTT_"}  # sections whose variables carry a prefix (their field names are generic)


def field_names() -> dict[str, str]:
    """Capitalised pgolf field names (with their section's `PREFIXED_SECTIONS` prefix) that belong to exactly one
    config section -> 'section.field'."""
    owners: dict[str, list[str]] = {}
    cfg = Config()
    for section in SECTIONS:
        prefix = PREFIXED_SECTIONS.get(section, "")
        for f in dataclasses.fields(getattr(cfg, section)):
            owners.setdefault(prefix + f.name.upper(), []).append(f"{section}.{f.name}")
    return {name: where[0] for name, where in owners.items() if len(where) == 1}


def official_run(environ: Mapping[str, str] | None = None) -> OfficialRun:
    environ = os.environ if environ is None else environ
    for name, why in UNSUPPORTED.items():
        if name in environ:
            raise PgolfError(f"environment {name}: not supported by pgolf ({why}); unset it")
    fields = {**field_names(), **OFFICIAL_FIELDS}
    sets = [f"{fields[name]}={environ[name]}" for name in sorted(fields) if name in environ]
    tokenizer = environ.get("TOKENIZER_PATH")
    if tokenizer is None and Path(OFFICIAL_TOKENIZER_PATH).is_file():
        tokenizer = OFFICIAL_TOKENIZER_PATH
    return OfficialRun(data=Path(environ.get("DATA_PATH", OFFICIAL_DATA_PATH)),
                       tokenizer=Path(tokenizer) if tokenizer else None, run_id=environ.get("RUN_ID"), sets=sets)
