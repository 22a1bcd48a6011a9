#!/usr/bin/env bash
# Run HERE (not on the GPU machine) before benchmarks/gpu_check.sh: fills the git-ignored folder local/gpu_carry/
# with what the GPU machine cannot fetch itself. Carry it with the device tool's `carry: ["local/gpu_carry"]`.
#   - official/train_gpt.py: the official baseline script, from a read-only copy of openai/parameter-golf fetched
#     outside the project (argument 1: its git directory, e.g. /work/.mirror/openai+parameter-golf/repo);
#   - fineweb_1024_bpe.model: the official sp1024 tokenizer, from ../shared/data/tokenizers (the official script
#     needs it for its BPB tables).
# Nothing here is copied into the project's tracked files.
set -euo pipefail
mirror=${1:?usage: benchmarks/gpu_check_prepare.sh OFFICIAL_REPO_GIT_DIR}
root=$(cd "$(dirname "$0")/.." && pwd)
carry="$root/local/gpu_carry"
mkdir -p "$carry/official"
git -C "$mirror" show HEAD:train_gpt.py > "$carry/official/train_gpt.py"
install -m 0644 "$root/../shared/data/tokenizers/fineweb_1024_bpe.model" "$carry/"  # the source is read-only
git -C "$mirror" rev-parse HEAD > "$carry/official/COMMIT"
du -sh "$carry"
