"""The self-extracting `train_gpt.py` file a bundle is (docs/rules.md#code-bytes): stage 2, the compressed payload
and the base-251 literal that carries it.

The payload is stage 2 (`STAGE2`, an in-memory importer), a NUL, then `path NUL source NUL ...`; it is compressed
with raw LZMA2 and brotli-11 in each file order the caller offers, and the smallest result is written as the
digits of one base-251 number in a 4-line latin-1 script (`self_extracting_script`). `pgolf.bundle.build` decides
what goes into the files; this module only decides how they travel.
"""

from __future__ import annotations

import lzma

# Runs inside the bundle with `D` (the decompressed payload) and `__file__` (the script) in scope. `F.bundle_file`
# is how pgolf.bundle.code_bytes recognises that it is running from a bundle. Written pre-minified on purpose:
# every byte here is counted code. Formatted with the preset name (`%r`).
STAGE2 = '''import sys,importlib.util as U
P=D[D.index(0)+1:].decode().split("\\0");P=dict(zip(P[::2],P[1::2]))
class T:
 def __init__(s,p):s.p=p;s.name=p.split("/")[-1]
 def __truediv__(s,c):return T(s.p+"/"+c)
 def is_file(s):return s.p in P
 def iterdir(s):return[T(s.p+"/"+c)for c in sorted({k[len(s.p)+1:].split("/")[0]for k in P if k.startswith(s.p+"/")})]
 def read_text(s,encoding=None):return P[s.p]
 def files(s):return s
class F:
 bundle_file=__file__
 def find_spec(s,n,*a):
  k=n.replace(".","/")
  for f in(k+"/__init__.py",k+".py"):
   if f in P:return U.spec_from_loader(n,s,origin=f,is_package="/__init__"in f)
 def create_module(s,m):pass
 def exec_module(s,m):o=m.__spec__.origin;exec(compile(P[o],o,"exec",dont_inherit=1),m.__dict__)
 def get_resource_reader(s,n):return T(n.replace(".","/"))
sys.meta_path.insert(0,F())
if __name__=="__main__":from pgolf.cli import train_main;sys.exit(train_main(preset=%r))
'''

# The compressed payload is embedded as the digits of one base-251 number in a single-quoted str literal of a latin-1
# source file: such a literal holds every byte value as it is except NUL, LF, CR, the quote and the backslash, so the
# other 251 values are the digits. That costs log(256)/log(251) - 1 = 0.36% over the raw bytes, where base85 costs
# 25% and escaping the five costs more than this (docs/BENCHMARKS.md). The wrapper decodes digit by digit: the
# shortest loop, but quadratic in the payload's length (a divide-and-conquer decoder would be faster and longer;
# docs/BENCHMARKS.md has both figures).
_EXCLUDED = b"\0\n\r'\\"
_ALPHABET = bytes(b for b in range(256) if b not in _EXCLUDED)
_BASE = len(_ALPHABET)
_DIGIT = "c" + "".join(f"-(c>{b})" for b in _EXCLUDED)  # the digit a literal character c stands for
_DECOMPRESS = {  # codec -> (import, decompression of the bytes `{blob}`)
    "lzma2": ("lzma as L", "L.decompress({blob},3,None,[{{'id':33}}])"),
    "brotli": ("brotli", "brotli.decompress({blob})"),
}


def base251_digits(blob: bytes) -> bytes:
    """`blob` as one big-endian number written in base 251 with the bytes of `_ALPHABET` as digits (no leading
    zero digits); the wrapper's loop reads it back with `n.to_bytes(len(blob), 'big')`. Divide and conquer, so the
    build does not pay the quadratic digit-by-digit time."""
    number = int.from_bytes(blob, "big")
    powers = [_BASE]  # powers[i] = 251 ** (2 ** i)
    while powers[-1] <= number:
        powers.append(powers[-1] * powers[-1])

    def digits(n: int, level: int) -> list[int]:  # exactly 2 ** (level + 1) digits of n < powers[level + 1]
        if level < 0:
            return [n]
        high, low = divmod(n, powers[level])
        return digits(high, level - 1) + digits(low, level - 1)

    out = digits(number, len(powers) - 2) if number else [0]
    first = next((i for i, d in enumerate(out) if d), len(out) - 1)
    return bytes(_ALPHABET[d] for d in out[first:])


def _wrapper(codec: str, blob: bytes) -> tuple[bytes, bytes]:
    """The script's text before and after the digits of `blob`."""
    module, call = _DECOMPRESS[codec]
    head = f"#coding:latin-1\nimport {module};n=0\nfor c in map(ord,'"
    call = call.format(blob=f"n.to_bytes({len(blob)},'big')")
    tail = f"'):n=n*{_BASE}+{_DIGIT}\nD={call};exec(D[:D.index(0)])\n"
    return head.encode("latin-1"), tail.encode("latin-1")


def self_extracting_script(codec: str, blob: bytes) -> bytes:
    """The 4-line `train_gpt.py` that decodes `blob` (the `codec`-compressed payload) and runs its stage 2."""
    head, tail = _wrapper(codec, blob)
    return head + base251_digits(blob) + tail


def _lzma(data: bytes) -> bytes:
    filters = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 3, "lp": 0, "pb": 0}]
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=filters)


def _brotli(data: bytes) -> bytes | None:
    try:
        import brotli
    except ImportError:
        return None
    return brotli.compress(data, quality=11, lgwin=24, mode=brotli.MODE_TEXT)


def smallest_script(preset: str, orders: list[list[tuple[str, str]]]) -> tuple[str, bytes, int]:
    """(codec, script bytes, packed source bytes) of the smallest script over the file `orders` and both codecs.
    Only the winner is written out: the script is its compressed payload plus a fixed wrapper and 0.36% for the
    digits, so the smallest payload with its wrapper is the smallest script (to within a digit)."""
    candidates = []
    for files in orders:
        packed = "\0".join(part for pair in files for part in pair).encode()
        payload = (STAGE2 % preset).encode() + b"\0" + packed
        candidates.append(("lzma2", _lzma(payload)))
        compressed = _brotli(payload)
        if compressed is not None:
            candidates.append(("brotli", compressed))
    codec, blob = min(candidates, key=lambda item: (len(item[1]) + sum(map(len, _wrapper(*item))), item[0]))
    return codec, self_extracting_script(codec, blob), len(packed)
