#!/usr/bin/env bash
# Rehearse the GPU check here, on the CPU, with the GPU machine's own software (issue 20): a venv with the versions
# of benchmarks/gpu_image.txt (Python 3.12, torch 2.11.0, triton 3.6.0, numpy; none of the packages the image lacks),
# the carried wheels installed by gpu_check.sh exactly as on the GPU, every module the image lacks refused unless it
# comes from those wheels, then
#   1. the smoke mode of benchmarks/gpu_check.sh (every stage, CPU presets), and
#   2. the CPU tests of the version-sensitive paths under those versions: the Triton kernels through triton's
#      interpreter, the fake-CUDA traces of the training and TTT steps, varlen keywords, imports without codecs.
# Output under $OUT (default local/gpu_rehearsal/out): versions.txt, the gpu_check files, rehearsal-tests.txt, and
# summary.txt with one line per stage. Exit code 0 only when every stage that can run on a CPU passed.
#
#   bash benchmarks/gpu_rehearsal.sh [OFFICIAL_REPO_GIT_DIR]   # the first run builds the venv (~3 GB, minutes)
#
# With the official repository's git directory (e.g. /work/.mirror/openai+parameter-golf/repo) local/gpu_carry is
# prepared whole, as for the GPU run; without it only the wheels are, and the official-baseline and record-script
# stages report "not prepared" (a failure here: the rehearsal is of the run as it will be).
set -uo pipefail
mirror=${1:-}
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=gpu_image.txt
source benchmarks/gpu_image.txt
work=${GPU_REHEARSAL_DIR:-$root/local/gpu_rehearsal}
VENV=$work/venv
OUT=${OUT:-$work/out}
rm -rf "$OUT"
mkdir -p "$OUT"
fail() { echo "gpu_rehearsal: $*" >&2; exit 2; }

minor=${PYTHON_VERSION%.*}  # 3.12
base=""
for candidate in "$(command -v "python$minor")" $(ls -d "$HOME"/.pyenv/versions/"$minor".*/bin/python 2>/dev/null); do
  if [ -n "$candidate" ] && "$candidate" -c "" 2> /dev/null; then base=$candidate; break; fi  # (pyenv shims may not run)
done
[ -n "$base" ] || fail "no Python $minor here (the image has $PYTHON_VERSION): install it or put python$minor on PATH"

image_ok() {  # the venv holds the image's torch and triton, and none of what the image lacks
  "$VENV/bin/python" - "$TORCH" "$TRITON" "$LACKS" <<'PY' > /dev/null 2>&1
import importlib.metadata as md, sys
torch, triton, lacks = sys.argv[1], sys.argv[2], sys.argv[3].split()
assert md.version("torch").split("+")[0] == torch and md.version("triton") == triton
for name in lacks:
    try:
        md.version(name)
    except md.PackageNotFoundError:
        continue
    raise SystemExit(f"{name} is installed")
PY
}
if [ ! -x "$VENV/bin/python" ] || ! image_ok; then
  rm -rf "$VENV"
  "$base" -m venv "$VENV" || fail "cannot make a venv with $base"
  # numpy: the image's minor release if this index has it, else the newest it has (said in versions.txt)
  "$VENV/bin/pip" install --quiet "torch==$TORCH" "triton==$TRITON" "numpy==$NUMPY.*" $HAS > "$work/install.txt" 2>&1 \
    || "$VENV/bin/pip" install --quiet "torch==$TORCH" "triton==$TRITON" numpy $HAS >> "$work/install.txt" 2>&1 \
    || fail "installing the image's packages failed (see $work/install.txt)"
  image_ok || fail "the venv does not match gpu_image.txt after installing (see $work/install.txt)"
fi
"$VENV/bin/python" - "$NUMPY" > "$OUT/versions.txt" 2>&1 <<'PY'
import platform, sys
import numpy, torch, triton
print("python", platform.python_version(), "torch", torch.__version__, "triton", triton.__version__,
      "numpy", numpy.__version__)
if not numpy.__version__.startswith(sys.argv[1] + "."):
    print(f"note: the image has numpy {sys.argv[1]}.x; this index has no such release, {numpy.__version__} is used")
PY
cat "$OUT/versions.txt"

# The carried folder as the GPU run gets it: prepared with the official repository's copy when it is given.
if [ ! -d local/gpu_carry/wheels ] || { [ -n "$mirror" ] && { [ ! -f local/gpu_carry/record/train_gpt.py ] || [ ! -f local/gpu_carry/official/train_gpt.py ]; }; }; then
  bash benchmarks/gpu_check_prepare.sh $mirror || fail "benchmarks/gpu_check_prepare.sh failed"
fi

# Refuse the modules the image lacks unless they come from the carried wheels (as on the GPU machine, where only
# those exist): a sitecustomize on PYTHONPATH installs a finder ahead of the others.
block=$work/block
mkdir -p "$block"
cat > "$block/sitecustomize.py" <<'PY'
"""benchmarks/gpu_rehearsal.sh: modules the GPU image lacks import only from the carried wheels' --target folder."""
import importlib.machinery
import os
import sys

_LACKING = set(os.environ.get("GPU_REHEARSAL_LACKS", "").split())
_SITE = os.environ.get("GPU_CHECK_SITE", "\0")


class _ImageOnly:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name not in _LACKING:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and not (spec.origin or "").startswith(_SITE):
            raise ModuleNotFoundError(f"No module named {name!r} (not on the GPU image: benchmarks/gpu_image.txt)",
                                      name=name)
        return None


sys.meta_path.insert(0, _ImageOnly)
PY
site=$(mktemp -d "${TMPDIR:-/tmp}/gpu_rehearsal_site.XXXXXX")
lacking=""
for pkg in $LACKS; do
  module=$(echo "$pkg" | tr 'A-Z-' 'a-z_')
  lacking="$lacking $module"
  [ "$module" = pytest ] && lacking="$lacking _pytest"
done
export GPU_REHEARSAL_LACKS=$lacking GPU_CHECK_SITE=$site PYTHONPATH=$block

GPU_CHECK_SMOKE=1 PYTHON="$VENV/bin/python" OUT="$OUT" bash benchmarks/gpu_check.sh > "$OUT/gpu_check.txt" 2>&1
echo "gpu_check smoke: exit $?"

# The version-sensitive CPU tests under the image's versions (the carried pytest, from $site).
tests=(tests/model/test_kernels.py tests/model/test_fake_cuda.py tests/model/test_document_attention.py
       tests/test_optional_imports.py)
TRITON_INTERPRET=1 PYTHONPATH="$block:$site:$root/src:$root" timeout 900 "$VENV/bin/python" -m pytest -q \
  -p no:cacheprovider "${tests[@]}" > "$OUT/rehearsal-tests.txt" 2>&1
rc=$?
echo "rehearsal-tests: $([ $rc -eq 0 ] && echo ok || echo "failed ($rc)") $(tail -n 1 "$OUT/rehearsal-tests.txt")" \
  | tee -a "$OUT/summary.txt"
rm -rf "$site"
echo "--- $OUT/summary.txt"
cat "$OUT/summary.txt"
# Every stage that can run on a CPU passed: ok, or skipped for needing CUDA (official-baseline, record-script).
! grep -v -E ": (ok|skipped \(smoke)" "$OUT/summary.txt"
