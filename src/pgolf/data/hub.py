"""Download the official cached FineWeb export from the Hugging Face Hub (CHALLENGE.md 1.4), manifest-driven.

The remote repository (a dataset repo, default `willdepueoai/parameter-golf`, root `datasets`) holds
`<root>/manifest.json`: a `datasets` list whose entry `fineweb10B_<variant>` names a `tokenizer_name` and carries
`stats.files_train` / `stats.files_val`, and a `tokenizers` list whose entries give `model_path` / `vocab_path`
(idea and format from openai/parameter-golf `data/cached_challenge_fineweb.py`; our own code). We always re-fetch the
remote manifest (a stale cached manifest from another repo broke the official tool, 04-01 README) and lay files out
as the official tool does: `OUT/datasets/fineweb10B_<variant>/fineweb_{train,val}_NNNNNN.bin` and
`OUT/tokenizers/...`. The tokenizer model is also placed beside the shards so the dataset folder is self-contained
for pgolf. Files are hard-linked from the Hub cache (copied when linking fails) through a temporary name, and files
already present with a valid shard header and the Hub's size are skipped, so an interrupted download resumes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from pgolf.data.shards import read_header
from pgolf.errors import PgolfError

DEFAULT_REPO = "willdepueoai/parameter-golf"
DEFAULT_ROOT = "datasets"


@dataclass
class DownloadResult:
    dataset_dir: Path
    tokenizer_path: Path
    files: list[Path] = field(default_factory=list)
    skipped: int = 0


class _Source:
    """Fetches repository files either from the Hub (hf_hub_download) or from a local mirror directory."""

    def __init__(self, repo_id: str, revision: str | None, hub_dir: Path | None, endpoint: str | None,
                 cache_dir: Path | None) -> None:
        self.repo_id, self.revision, self.hub_dir = repo_id, revision, hub_dir
        self.endpoint, self.cache_dir = endpoint, cache_dir

    def where(self) -> str:
        return str(self.hub_dir) if self.hub_dir else f"hub {self.repo_id}"

    def fetch(self, remote: str, force: bool = False) -> Path:
        if self.hub_dir is not None:
            path = self.hub_dir / remote
            if not path.is_file():
                raise PgolfError(f"{self.where()}: {remote} not found")
            return path
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

        try:
            return Path(hf_hub_download(self.repo_id, remote, repo_type="dataset", revision=self.revision,
                                        cache_dir=self.cache_dir, endpoint=self.endpoint,
                                        force_download=force))
        except EntryNotFoundError:
            raise PgolfError(f"{self.where()}: {remote} not found") from None
        except LocalEntryNotFoundError:
            raise PgolfError(f"{self.where()}: cannot reach the Hub to fetch {remote} (offline or unreachable)") from None
        except HfHubHTTPError as exc:
            status = getattr(getattr(exc, "response", None), "status_code", "?")
            raise PgolfError(f"{self.where()}: fetching {remote} failed (HTTP {status})") from None
        except OSError as exc:
            raise PgolfError(f"{self.where()}: fetching {remote} failed: {exc}") from None

    def size(self, remote: str) -> int | None:
        """The file's size on the source, when it can be known without downloading."""
        if self.hub_dir is not None:
            path = self.hub_dir / remote
            return path.stat().st_size if path.is_file() else None
        try:
            from huggingface_hub import get_hf_file_metadata, hf_hub_url

            url = hf_hub_url(self.repo_id, remote, repo_type="dataset", revision=self.revision, endpoint=self.endpoint)
            return get_hf_file_metadata(url, endpoint=self.endpoint).size
        except Exception:  # size is an optimisation for resuming; the download itself reports real errors
            return None


def _place(src: Path, dst: Path) -> None:
    """Hard-link (else copy) `src` to `dst` through a temporary name, so `dst` is never partial."""
    src = src.resolve()  # the Hub cache holds symlinks to blobs; link the blob itself
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.part")
    tmp.unlink(missing_ok=True)
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def _present(path: Path, expected_size: int | None) -> bool:
    if not path.is_file():
        return False
    if expected_size is not None and path.stat().st_size != expected_size:
        return False
    if path.suffix == ".bin":
        try:
            read_header(path)
        except PgolfError:
            return False
    return True


def _lookup(manifest: dict, variant: str, where: str, manifest_name: str) -> tuple[dict, dict]:
    try:
        datasets = {d["name"]: d for d in manifest["datasets"]}
        tokenizers = {t["name"]: t for t in manifest["tokenizers"]}
    except (KeyError, TypeError):
        raise PgolfError(f"{where}: {manifest_name} is malformed (needs 'datasets' and 'tokenizers' lists)") from None
    name = f"fineweb10B_{variant}"
    if name not in datasets:
        known = ", ".join(sorted(n.removeprefix("fineweb10B_") for n in datasets)) or "none"
        raise PgolfError(f"{where}: variant {variant} not in {manifest_name} (available: {known})")
    entry = datasets[name]
    tok_name = entry.get("tokenizer_name")
    if tok_name not in tokenizers:
        raise PgolfError(f"{where}: tokenizer {tok_name!r} of {name} not in {manifest_name}")
    return entry, tokenizers[tok_name]


def download_fineweb(out_dir: str | Path, *, variant: str = "sp1024", train_shards: int = 80,
                     repo_id: str = DEFAULT_REPO, remote_root: str = DEFAULT_ROOT, with_docs: bool = False,
                     revision: str | None = None, progress: bool = True, hub_dir: str | Path | None = None,
                     endpoint: str | None = None, cache_dir: str | Path | None = None) -> DownloadResult:
    """Download (or resume) one variant of the official export into `out_dir` with the official layout."""
    out_dir = Path(out_dir)
    src = _Source(repo_id, revision, Path(hub_dir) if hub_dir else None, endpoint,
                  Path(cache_dir) if cache_dir else None)
    root = remote_root.strip("/")
    manifest_remote = f"{root}/manifest.json" if root else "manifest.json"
    try:
        manifest = json.loads(src.fetch(manifest_remote).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PgolfError(f"{src.where()}: {manifest_remote} is not valid JSON") from None
    entry, tok = _lookup(manifest, variant, src.where(), manifest_remote)
    stats = entry.get("stats") or {}
    try:
        n_train, n_val = int(stats["files_train"]), int(stats["files_val"])
    except (KeyError, TypeError, ValueError):
        raise PgolfError(f"{src.where()}: {manifest_remote} lacks stats.files_train/files_val for {entry['name']}") from None
    if train_shards < 0 or train_shards > n_train:
        raise PgolfError(f"{src.where()}: {variant} has {n_train} train shards; cannot download {train_shards}")
    # Keep the remote manifest, namespaced by repo so two repos never share one cached copy.
    local_manifest = out_dir / "manifests" / repo_id.replace("/", "__") / "manifest.json"
    local_manifest.parent.mkdir(parents=True, exist_ok=True)
    local_manifest.write_text(json.dumps(manifest, indent=2), encoding="utf-8")

    prefix = f"{root}/" if root else ""
    dataset_dir = out_dir / "datasets" / entry["name"]
    plan: list[tuple[str, Path]] = []
    for i in range(n_val):
        plan.append((f"{prefix}datasets/{entry['name']}/fineweb_val_{i:06d}.bin", dataset_dir / f"fineweb_val_{i:06d}.bin"))
    for i in range(train_shards):
        plan.append((f"{prefix}datasets/{entry['name']}/fineweb_train_{i:06d}.bin",
                     dataset_dir / f"fineweb_train_{i:06d}.bin"))
    model_path = None
    for key in ("model_path", "vocab_path"):
        rel = tok.get(key)
        if not rel:
            continue
        rel = rel[len(prefix):] if prefix and rel.startswith(prefix) else rel
        local = out_dir / "tokenizers" / Path(rel).name
        plan.append((prefix + rel, local))
        if key == "model_path":
            model_path = local
    if model_path is None:
        raise PgolfError(f"{src.where()}: tokenizer {tok.get('name')!r} has no model_path in {manifest_remote}")
    if with_docs:
        for name in ("docs_selected.jsonl", "docs_selected.source_manifest.json"):
            plan.append((prefix + name, out_dir / name))

    result = DownloadResult(dataset_dir=dataset_dir, tokenizer_path=dataset_dir / model_path.name)
    for remote, local in tqdm(plan, desc=f"fineweb {variant}", unit="file", disable=not progress, file=sys.stderr):
        if _present(local, src.size(remote)):
            result.skipped += 1
        else:
            # A damaged local copy may share its inode with the cache blob (hard link): fetch it afresh.
            _place(src.fetch(remote, force=local.exists()), local)
            if local.suffix == ".bin":
                read_header(local)
        result.files.append(local)
    _place(model_path, result.tokenizer_path)
    return result
