"""Names of the evaluation modes, importable without torch (the CLI and the config validate against them)."""

FIXED_MODES = ("flat", "sliding", "doc")  # fixed predictors (pgolf/eval/modes.py)
TTT_MODES = ("lora-ttt", "sgd-ttt", "phased-ttt")  # score-first test-time training (pgolf/eval/ttt.py)
EVAL_MODES = FIXED_MODES + TTT_MODES
