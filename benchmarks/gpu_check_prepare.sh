#!/usr/bin/env bash
# Run HERE (not on the GPU machine) before benchmarks/gpu_check.sh: fills the git-ignored folder local/gpu_carry/
# with what the offline GPU machine cannot fetch itself. Carry it with the device tool's `carry: ["local/gpu_carry"]`.
#   - wheels/: the cp$PY_TAG manylinux wheels of every package the GPU image lacks (benchmarks/gpu_image.txt LACKS),
#     at the versions pinned in constraints-dev.txt (about 10 MB); gpu_check.sh installs them with --target;
#   - official/train_gpt.py: the official baseline script, from a read-only copy of openai/parameter-golf fetched
#     outside the project (argument 1: its git directory, e.g. /work/.mirror/openai+parameter-golf/repo);
#   - fineweb_1024_bpe.model: the official sp1024 tokenizer, from ../shared/data/tokenizers (for the official script);
#   - record/: the 1.0611 record's train_gpt.py with FlashAttention-3 replaced by torch's varlen_attn and its
#     tokenizer (benchmarks/record_script.py prepare: exact-once text patches applied here, at preparation time).
# Without argument 1 only the wheels are prepared. Nothing here is copied into the project's tracked files.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
mirror=${1:-}
PY=${PYTHON:-python}
carry="$root/local/gpu_carry"
# shellcheck source=gpu_image.txt
source "$root/benchmarks/gpu_image.txt"

pins=()
for pkg in $LACKS; do
  pin=$(grep -i -E "^${pkg}==" "$root/constraints-dev.txt" | head -n 1 || true)
  if [ -z "$pin" ]; then
    echo "gpu_check_prepare: $pkg (gpu_image.txt LACKS) has no pin in constraints-dev.txt" >&2
    exit 2
  fi
  pins+=("$pin")
done
rm -rf "$carry/wheels.new"
mkdir -p "$carry/wheels.new"
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PY_TAG" --implementation cp \
  --abi "cp$PY_TAG" --abi abi3 --abi none --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform any -d "$carry/wheels.new" "${pins[@]}"
rm -rf "$carry/wheels"
mv "$carry/wheels.new" "$carry/wheels"
echo "wheels: ${pins[*]}"

if [ -n "$mirror" ]; then
  mkdir -p "$carry/official"
  git -C "$mirror" show HEAD:train_gpt.py > "$carry/official/train_gpt.py.new"
  mv "$carry/official/train_gpt.py.new" "$carry/official/train_gpt.py"
  git -C "$mirror" rev-parse HEAD > "$carry/official/COMMIT"
  install -m 0644 "$root/../shared/data/tokenizers/fineweb_1024_bpe.model" "$carry/"  # the source is read-only
  "$PY" "$root/benchmarks/record_script.py" prepare --mirror "$mirror" --out "$carry/record"
else
  echo "no official repository given: wheels only (official-baseline and record-script will be skipped)"
fi
du -sh "$carry"
