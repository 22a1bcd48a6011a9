"""Folding a bundle's fixed technique switches: what is folded, what must not be, and the run-time refusal."""

from __future__ import annotations

import ast
import textwrap

import pytest

from pgolf import config as config_module
from pgolf.options import resolve_config
from pgolf.errors import PgolfError
from pgolf.submit.fold import fold_frozen, frozen_fields

FROZEN = {"quant.gptq": True, "quant.calib": "train", "quant.qat_bits": 0, "model.bigram_rows": 0,
          "model.attn_gate": "sparse", "optim.muon_ns": "polar_express"}


def _fold(source: str, module: str = "pgolf.example") -> tuple[str, int]:
    tree = ast.parse(textwrap.dedent(source))
    count = fold_frozen(tree, module, FROZEN)
    return ast.unparse(tree), count


def test_frozen_fields_are_the_switches_of_the_preset():
    frozen = frozen_fields(resolve_config("record", environ={}))
    assert frozen["model.attn_gate"] == "sparse" and frozen["model.bigram_rows"] == 0
    assert frozen["quant.gptq"] is True and frozen["optim.muon_ns"] == "polar_express"
    assert "model.num_layers" not in frozen and "model.model_dim" not in frozen  # sizes stay free
    assert not any(key.startswith(("train.", "eval.")) for key in frozen)


def test_annotated_parameters_fold_and_dead_branches_go():
    out, count = _fold('''
        def f(cfg: Config, q: QuantConfig, m: "ModelConfig", other):
            if cfg.quant.qat_bits:
                configure_qat()
            elif q.gptq and q.calib == "train":
                collect()
            else:
                skip()
            table = BigramHash() if m.bigram_rows else None
            keep = other.quant.gptq and q.gptq
            return m.attn_gate != "none", other.model.bigram_rows
        ''')
    assert count == 6
    assert "configure_qat" not in out and "skip" not in out and "BigramHash" not in out
    assert "collect()" in out and "table = None" in out
    assert "keep = other.quant.gptq and True" in out  # an unknown variable is never folded
    assert "return (True, other.model.bigram_rows)" in out


def test_rebound_variables_and_fstrings_are_left_alone():
    out, count = _fold('''
        def f(cfg: Config):
            cfg = other()
            return cfg.quant.gptq

        def g(q: QuantConfig):
            for q in items:
                pass
            return q.gptq

        def h(q: QuantConfig):
            return f"{q.calib}", q.calib
        ''')
    assert count == 1
    assert "return cfg.quant.gptq" in out and "return q.gptq" in out
    assert "return (f'{q.calib}', 'train')" in out


def test_aliases_bound_once_and_self_attributes_fold():
    out, count = _fold('''
        class Trainer:
            def __init__(self, cfg: Config):
                self.cfg = cfg

            def run(self):
                cfg, q = self.cfg, self.cfg.quant
                if not q.gptq:
                    return None
                return cfg.optim.muon_ns

        class Other:
            def __init__(self, cfg: Config):
                self.cfg = cfg

            def reset(self, cfg):
                self.cfg = cfg

            def run(self):
                return self.cfg.quant.gptq
        ''')
    assert count == 2
    assert "return None" not in out and "return 'polar_express'" in out
    assert "return self.cfg.quant.gptq" in out  # Other.cfg is rebound: not provably the run's config


def test_a_block_folded_empty_keeps_valid_syntax():
    out, _ = _fold('''
        def f(q: QuantConfig):
            if q.gptq:
                if q.qat_bits:
                    configure_qat()
            return 1
        ''')
    ast.parse(out)
    assert "configure_qat" not in out


def test_config_methods_fold_through_self_only_in_pgolf_config():
    source = '''
        class Config:
            def validate(self):
                m = self.model
                if m.attn_gate not in ("none", "sparse"):
                    raise ValueError(m.attn_gate)
        '''
    folded, count = _fold(source, "pgolf.config")
    assert count == 2 and "raise" not in folded  # the read in the dead branch counts too
    kept, count = _fold(source, "pgolf.other")
    assert count == 0 and "raise" in kept


def test_a_bundle_config_refuses_a_change_to_a_fixed_switch(monkeypatch):
    monkeypatch.setattr(config_module, "BUNDLE_FROZEN", {"model.bigram_rows": 0, "quant.codec": "ans"})
    resolve_config("record", ["model.num_layers=9"], environ={})  # sizes may change
    with pytest.raises(PgolfError, match=r"model.bigram_rows=4096: this train_gpt.py bundle fixes "
                                         r"model.bigram_rows=0 .*rebuild it with `pgolf bundle`"):
        resolve_config("record", ["model.bigram_rows=4096"], environ={})


def test_statements_after_a_jump_are_dropped():
    out, _ = _fold('''
        def export(q: QuantConfig):
            if q.gptq:
                return fitted()
            return plain()

        def loop(items):
            for x in items:
                continue
                never()
            raise ValueError()
            unreachable()
    ''')
    assert "plain" not in out and "never" not in out and "unreachable" not in out
    assert "return fitted()" in out and "continue" in out and "raise ValueError()" in out


def test_global_constants_fold_only_as_bare_names():
    tree = ast.parse(textwrap.dedent('''
        def count():
            if IN_BUNDLE:
                return running()
            return fallback()
        note = "bundle" if IN_BUNDLE else ""
        other = pgolf.IN_BUNDLE
    '''))
    fold_frozen(tree, "pgolf.example", {}, names={"IN_BUNDLE": True})
    out = ast.unparse(tree)
    assert "fallback" not in out and "return running()" in out and "note = 'bundle'" in out
    assert "other = pgolf.IN_BUNDLE" in out  # an attribute read is not the bare name: left alone
