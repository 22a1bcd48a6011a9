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
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["plot", *map(str, runs), "--out", str(out), "--figures", "bytes"]) == 2  # no silent replacement
    assert "bytes.png exists: pass --overwrite" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["plot", *map(str, runs), "--out", str(out), "--figures", "bytes", "--overwrite"]) == 0


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


def test_labels_and_legends_cover_neither_each_other_nor_the_data(tmp_path, monkeypatch):
    """Six configurations with long labels: the ablation's labels do not overlap one another and stay inside the
    figure, and the curves' legend lies outside every axes (it covered the curves before)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from pgolf.submit import plots

    figures = {}
    real_save = plots._save
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.setdefault(path.name, fig) and real_save(fig, path))
    variants = [(), ("model.mlp_mult=3.0",), ("optim.matrix_lr=0.03", "train.warmup_steps=5"),
                ("model.num_layers=11", "model.xsa_last_n=4"), ("model.smear_gate=true",), ("optim.ema_decay=0.997",)]
    runs = []
    for i, sets in enumerate(variants):
        for seed in (1, 2):
            runs.append(fake_run(tmp_path / f"v{i}", seed, 1.10 + i / 200 + seed / 1000, sets=sets))
            _metrics(runs[-1], [7.0 - i / 10, 6.0, 5.5], [(2, 1.5 - i / 100), (3, 1.3)])
    assert main(["plot", *map(str, runs), "--out", str(tmp_path / "fig"), "--figures", "curves,ablation"]) == 0

    def drawn(fig):  # pyplot let go of the figure when it was closed: draw it again on its own canvas
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        return canvas.get_renderer()

    ablation = figures["ablation.png"]
    renderer = drawn(ablation)
    labels = [t.get_window_extent(renderer) for t in ablation.axes[0].get_yticklabels()]
    assert len(labels) == len(variants)
    assert not any(a.overlaps(b) for i, a in enumerate(labels) for b in labels[i + 1:])
    assert all(box.x0 >= 0 and box.y0 >= 0 and box.y1 <= ablation.bbox.y1 for box in labels)

    curves = figures["curves.png"]
    renderer = drawn(curves)
    (legend,) = curves.legends
    box = legend.get_window_extent(renderer)
    assert len(legend.get_texts()) == len(runs) and box.x1 <= curves.bbox.x1 + 1
    assert not any(box.overlaps(ax.get_window_extent(renderer)) for ax in curves.axes)
