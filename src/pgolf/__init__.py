"""pgolf: the Parameter Golf challenge pipeline as one package.

Data -> tokenizer -> shards -> training under a wall clock -> quantized, compressed artifact -> exact
tokenizer-agnostic bits-per-byte score. See docs/ and the README for the map.
"""

__version__ = "0.1.0"

# True only inside a `train_gpt.py` bundle: `pgolf bundle` sets it and folds every `if IN_BUNDLE` to the branch
# a bundle takes, so package-only code (counting the bundle a checkout would build, ...) drops out of the bundle.
IN_BUNDLE = False
