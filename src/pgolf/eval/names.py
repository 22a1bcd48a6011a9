"""Names of the evaluation modes, importable without torch (the CLI and the config validate against them)."""

FIXED_MODES = ("flat", "sliding", "doc")  # fixed predictors (pgolf/eval/modes.py)
TTT_MODES = ("lora-ttt", "sgd-ttt", "phased-ttt")  # score-first test-time training (pgolf/eval/ttt.py)
EVAL_MODES = FIXED_MODES + TTT_MODES  # every mode: what `eval.mode`, `--mode` and `score_stream` accept

# How a mode's score is named in log.txt and result.json (the records' log labels: `quantized`,
# `quantized_sliding_window`, `quantized_ttt_phased`).
REPORT_LABELS = {"flat": "quantized", "sliding": "quantized_sliding_window", "doc": "quantized_doc",
                 "lora-ttt": "quantized_ttt_lora", "sgd-ttt": "quantized_ttt_sgd", "phased-ttt": "quantized_ttt_phased"}


def report_label(mode: str) -> str:
    return REPORT_LABELS.get(mode, f"quantized_{mode}")
