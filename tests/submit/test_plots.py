"""`pgolf plot`: curves, artifact bytes and ablation PNGs from fake runs (a tiny real artifact for the bytes), valid
PNG files of the size matplotlib reads back; bad input and a missing matplotlib as one error line (exit 2)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from _submit_fakes import fake_run

from pgolf.cli import main
from pgolf.submit.plots import read_curves
from pgolf.submit.runs import load_run

matplotlib = pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tiny_artifact(path):
    import torch

    from pgolf.artifact.format import save_artifact
    from pgolf.quant.schemes import quantize_state_dict

    gen = torch.Generator().manual_seed(0)
    state = {"tok_emb.weight": torch.randn(64, 32, generator=gen),
             "blocks.0.mlp.fc.weight": torch.randn(64, 32, generator=gen),
             "blocks.0.attn.c_q.weight": torch.randn(32, 32, generator=gen)}
    size = save_artifact(path, quantize_state_dict(state), config={"model": {"vocab_size": 64}},
                         tokenizer={"file": "t.model", "vocab_size": 64, "sha256": "ab" * 32})
    result = json.loads((path.parent / "result.json").read_text())
    result["artifact_bytes"] = size
    (path.parent / "result.json").write_text(json.dumps(result))


def _metrics(run, losses, vals):
    recs = [{"step": i + 1, "train_loss": v, "time_s": 0.5 * (i + 1), "lr_mul": 1.0} for i, v in enumerate(losses)]
    recs += [{"step": s, "val_loss": b * 2, "val_bpb": b, "time_s": 0.5 * s, "val_tokens": 10, "full_val": True}
             for s, b in vals]
    recs.append({"step": len(losses), "val_loss": 2.0, "val_bpb": 1.0, "roundtrip": True})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def _check_png(path):
    from matplotlib.image import imread
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    img = imread(path)
    assert img.shape[:2] == (height, width) and width > 200 and height > 200
    with Image.open(path) as im:
        assert im.size == (width, height)


def test_all_figures(tmp_path, capsys):
    runs = [fake_run(tmp_path / "a", s, 1.10 + s / 1000) for s in (1, 2, 3)]
    runs += [fake_run(tmp_path / "b", s, 1.12 + s / 1000, sets=("train.iterations=9",)) for s in (1, 2)]
    for run in runs[:2]:
        _metrics(run, [7.0, 6.0, 5.5, 5.2], [(2, 1.5), (4, 1.3)])
    _tiny_artifact(runs[0] / "artifact.pgolf")
    for run in runs[1:]:
        (run / "artifact.pgolf").unlink()  # the fakes' random bytes are no artifact: only run 1 has bars
    out = tmp_path / "fig"
    assert main(["plot", *map(str, runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(out / "curves.png"), str(out / "bytes.png"), str(out / "ablation.png")]
    for name in printed:
        _check_png(Path(name))
    assert sorted(p.name for p in out.iterdir()) == ["ablation.png", "bytes.png", "curves.png"]  # no temp files


def test_curves_from_metrics_and_from_log(tmp_path):
    run = fake_run(tmp_path, 1, 1.2)
    curves = read_curves(load_run(run))  # no metrics.jsonl: the log's step lines
    assert curves.train == [(1, 0.148, 6.9)] and len(curves.val) == 1 and curves.val[0][0] == 4000
    _metrics(run, [7.0, 6.0], [(2, 1.5)])
    curves = read_curves(load_run(run))
    assert [p[0] for p in curves.train] == [1, 2] and curves.val == [(2, 1.0, 1.5)]  # roundtrip record left out


def test_figure_subset_and_no_artifact(tmp_path, capsys):
    runs = [fake_run(tmp_path, s, 1.1 + s / 100) for s in (1, 2)]
    for run in runs:
        (run / "artifact.pgolf").unlink()
    out = tmp_path / "fig"
    assert main(["plot", *map(str, runs), "--out", str(out), "--figures", "bytes,ablation"]) == 0
    assert capsys.readouterr().out.split() == [str(out / "ablation.png")]  # no artifact: no bytes figure
    _check_png(out / "ablation.png")


def test_bad_input_is_one_error_line(tmp_path, capsys, monkeypatch):
    def one_error(args, *words):
        assert main(["plot", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("pgolf: error:"), err
        for w in words:
            assert w in err[0]

    one_error([str(tmp_path / "missing"), "--out", str(tmp_path / "o")], "missing")
    run = fake_run(tmp_path / "r", 1, 1.2)
    (run / "result.json").unlink()
    (run / "log.txt").write_text("step:1/10 train_loss:6.9 train_time:10ms step_avg:10ms\n")
    one_error([str(run), "--out", str(tmp_path / "o")], "no final score")
    good = fake_run(tmp_path / "g", 1, 1.2)  # its artifact.pgolf is random bytes
    one_error([str(good), "--out", str(tmp_path / "o")], "artifact.pgolf", "not a pgolf artifact")
    one_error([str(good), "--out", str(tmp_path / "o"), "--figures", "pie"], "curves,bytes,ablation")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    one_error([str(good), "--out", str(tmp_path / "o")], "matplotlib is not installed")
    assert not (tmp_path / "o").exists()
