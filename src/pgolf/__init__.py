"""pgolf: the Parameter Golf challenge pipeline as one package.

Data -> tokenizer -> shards -> training under a wall clock -> quantized, compressed artifact -> exact
tokenizer-agnostic bits-per-byte score. See docs/ and the README for the map.
"""

__version__ = "0.1.0"
