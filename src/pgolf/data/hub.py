"""Download a hosted FineWeb export from the Hugging Face Hub (docs/rules.md#hub-download-layout, docs/data.md#variants)
and write pgolf's `manifest.json` beside its shards.

`VARIANTS` says where each export lives. Facts from openai/parameter-golf (the code here is our own):
- sp1024: `willdepueoai/parameter-golf`, root `datasets` (`data/cached_challenge_fineweb.py`, `data/README.md`);
- sp4096 and sp8192: `kevclark/parameter-golf`, built with the official `data/download_hf_docs_and_tokenize.py` and
  fetched with `MATCHED_FINEWEB_REPO_ID=kevclark/parameter-golf data/cached_challenge_fineweb.py --variant sp4096
  --train-shards 143` / `--variant sp8192 --train-shards 128` (records 2026-04-01_Vocab4096_MLPMult4_WD085 and
  2026-04-05_SP8192_GPTQ-Embeddings_SDClip_Loop45x2, README), so root `datasets`, folders `fineweb10B_sp<N>`, and
  tokenizers `tokenizers/fineweb_<N>_bpe.model` (the exporter's default model prefix);
- sp8192-caseops: `romeerp/parameter-golf-caseops-v1`, root `datasets` (record 2026-04-18_PR1626_CaseOps_Taper,
  README: `MATCHED_FINEWEB_REMOTE_ROOT_PREFIX=datasets ... --variant sp8192_lossless_caps_caseops_v1_reserved`),
  folder `datasets/datasets/fineweb10B_sp8192_lossless_caps_caseops_v1_reserved/`, tokenizer
  `datasets/tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model` (`scripts/run_1868_rerun.py`),
  and the val byte sidecar `fineweb_val_bytes_NNNNNN.bin`, one per val shard, fetched by that record's
  `cached_challenge_fineweb.py` when the manifest entry has a `val_bytes_glob`.

Every repository is read through `<root>/manifest.json`, written by the official exporter: a `datasets` list whose
entry (named after the dataset folder) has a `tokenizer_name` and `stats.files_train` / `stats.files_val`, and a
`tokenizers` list whose entry of that name gives `model_path` / `vocab_path` (SentencePiece) or `path` (the byte
tokenizer), relative to the root. Shards live at `<root>/datasets/<folder>/fineweb_{train,val}_NNNNNN.bin`, the
documents at `<root>/docs_selected.jsonl` with the sidecar `docs_selected.source_manifest.json`. Assumption: the shard
counts are not written down anywhere but in these manifests, so they come from there; when a table variant's
repository has no manifest, or a manifest without that variant's entry (kevclark's repository holds two exports and
we could not read which its manifest lists), the counts come from listing the dataset folder (numbered from 0 without
gaps) and the tokenizer model from the table.

Differences from the official tool, on purpose:
- the remote manifest is fetched on every run and never read back from `out_dir` (a stale local manifest from
  another repository broke variant lookup there, 04-01 README); a copy is kept for reference under
  `out_dir/manifests/<owner>--<name>/`, namespaced by repository id;
- every file is fetched at the commit the first file (normally the manifest) came from, so a repository updated
  mid-download cannot mix two exports;
- a file already in `out_dir` is skipped only if it is whole (the Hub's size where the Hub answers, and for shards a
  valid header whose token count matches the file size), so an interrupted or damaged download resumes;
- files appear under their final names only when complete (hard link, else copy, to a temporary name, then rename);
- the tokenizer model is also placed beside the shards and pgolf's `manifest.json` is written there by
  `pgolf.data.importer.import_data_dir`, which checks every shard, the tokenizer and the sidecar first (a manifest
  that already describes exactly these files and passes `check_data_dir` is kept, so a finished download re-runs
  quickly).

`hub_dir` replaces the network with a local directory laid out like the repository (an offline mirror, or a Hub
cache snapshot folder `.../datasets--owner--name/snapshots/<sha>`). The endpoint, cache, token and offline mode
follow huggingface_hub's own settings (HF_ENDPOINT, HF_HUB_CACHE, ...) unless `endpoint` / `cache_dir` are given.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from pgolf.data.caseops import SIDECAR_SPLIT
from pgolf.data.importer import count_numbered, import_data_dir
from pgolf.data.shards import read_header, shard_name
from pgolf.errors import PgolfError
from pgolf.fileio import atomic_write_bytes

DEFAULT_REPO = "willdepueoai/parameter-golf"
DEFAULT_ROOT = "datasets"
DOCS_FILES = ("docs_selected.jsonl", "docs_selected.source_manifest.json")


@dataclass(frozen=True)
class Variant:
    """Where a hosted export lives: its dataset repository, the export's root folder there, the dataset folder under
    `<root>/datasets/` (also the name of its entry in `<root>/manifest.json`), the tokenizer model relative to the
    root, and whether each val shard comes with a byte sidecar."""

    repo_id: str
    remote_root: str
    dataset: str
    tokenizer: str
    byte_sidecar: bool = False


VARIANTS: dict[str, Variant] = {
    "sp1024": Variant(DEFAULT_REPO, DEFAULT_ROOT, "fineweb10B_sp1024", "tokenizers/fineweb_1024_bpe.model"),
    "sp4096": Variant("kevclark/parameter-golf", "datasets", "fineweb10B_sp4096", "tokenizers/fineweb_4096_bpe.model"),
    "sp8192": Variant("kevclark/parameter-golf", "datasets", "fineweb10B_sp8192", "tokenizers/fineweb_8192_bpe.model"),
    "sp8192-caseops": Variant("romeerp/parameter-golf-caseops-v1", "datasets",
                              "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved",
                              "tokenizers/fineweb_8192_bpe_lossless_caps_caseops_v1_reserved.model", byte_sidecar=True),
}


def variant_spec(variant: str) -> Variant | None:
    """The table entry of `variant`, by pgolf's name or the official one (`<name>` of folder `fineweb10B_<name>`)."""
    return VARIANTS.get(variant) or next((v for v in VARIANTS.values() if v.dataset == f"fineweb10B_{variant}"), None)


@dataclass
class DownloadResult:
    """What `download_fineweb` produced: the dataset folder, the tokenizer model in it, and every planned file."""

    dataset_dir: Path
    tokenizer_path: Path
    files: list[Path] = field(default_factory=list)
    skipped: int = 0  # files already present and whole
    revision: str | None = None  # the commit everything came from (None: a local mirror, or the Hub cache offline)
    manifest: dict = field(default_factory=dict)  # pgolf's manifest.json, written in dataset_dir


class _NotFound(PgolfError):
    """The repository has no such file or folder."""


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's connection and timeout errors, which are not OSErrors (huggingface_hub 2.x uses httpx2,
    1.x httpx; the requests-based 0.x raises OSErrors)."""
    return tuple(mod.RequestError for name in ("httpx2", "httpx")
                 if (mod := sys.modules.get(name)) is not None and isinstance(getattr(mod, "RequestError", None), type))


class _SilentBar(tqdm):
    """Passed to huggingface_hub as its per-file progress bar class when progress is off."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs["disable"] = True
        super().__init__(*args, **kwargs)


class _Mirror:
    """Repository files from a local directory laid out like the repository."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise PgolfError(f"{root}: hub mirror directory does not exist")
        self.root, self.label, self.revision = root, f"mirror {root}", None

    def size(self, remote: str) -> int | None:
        try:
            return (self.root / remote).stat().st_size
        except OSError:
            return None

    def fetch(self, remote: str, force: bool = False) -> Path:
        path = self.root / remote
        if not path.is_file():
            raise _NotFound(f"{self.label}: {remote} not found")
        return path

    def list_dir(self, remote: str) -> list[str]:
        folder = self.root / remote
        if not folder.is_dir():
            raise _NotFound(f"{self.label}: {remote} not found")
        return [p.name for p in folder.iterdir() if p.is_file()]


class _Hub:
    """Repository files through huggingface_hub (`hf_hub_download` into its cache)."""

    def __init__(self, repo_id: str, revision: str | None, endpoint: str | None, cache_dir: Path | None,
                 progress: bool) -> None:
        self.repo_id, self.revision, self.endpoint, self.cache_dir = repo_id, revision, endpoint, cache_dir
        self.label, self.progress, self.online, self.pinned = f"hub {repo_id}", progress, True, False

    def _url(self, remote: str) -> str:
        from huggingface_hub import hf_hub_url

        return hf_hub_url(self.repo_id, remote, repo_type="dataset", revision=self.revision, endpoint=self.endpoint)

    def _errors(self) -> tuple[type[BaseException], ...]:
        from huggingface_hub.errors import HfHubHTTPError

        # OSError covers huggingface_hub's own errors (HfHubHTTPError, LocalEntryNotFoundError, ...) and disk errors;
        # ValueError is how hf_hub_download reports a bad repo id and a failed forced re-download.
        return (HfHubHTTPError, OSError, ValueError, *_transport_errors())

    def size(self, remote: str) -> int | None:
        """The file's size on the Hub (one HEAD request), or None when the Hub does not say."""
        if not self.online:
            return None
        from huggingface_hub import get_hf_file_metadata

        try:
            return get_hf_file_metadata(self._url(remote)).size
        except (*_transport_errors(), ConnectionError):
            self.online = False  # do not wait on a dead network once per file
        except self._errors():
            pass
        return None

    def _pin(self, remote: str, path: Path) -> None:
        """Fetch every later file at the commit the first file `remote` came from, so a repository updated
        mid-download cannot mix two exports. hf_hub_download returns `<cache>/<repo>/snapshots/<commit>/<remote>`
        (the Hub cache layout), online or from the cache when offline; anything else leaves the revision as it was."""
        self.pinned = True
        snapshot = path.parents[len(PurePosixPath(remote).parts) - 1]
        if snapshot.parent.name == "snapshots" and re.fullmatch(r"[0-9a-f]{40}", snapshot.name):
            self.revision = snapshot.name

    def list_dir(self, remote: str) -> list[str]:
        """The names of the files in folder `remote` (the Hub's tree API)."""
        from huggingface_hub import HfApi, RepoFile

        try:
            tree = HfApi(endpoint=self.endpoint).list_repo_tree(self.repo_id, remote, repo_type="dataset",
                                                                revision=self.revision)
            return [PurePosixPath(e.path).name for e in tree if isinstance(e, RepoFile)]
        except self._errors() as exc:
            raise self.error(exc, remote) from None

    def fetch(self, remote: str, force: bool = False) -> Path:
        from huggingface_hub import hf_hub_download

        extra = {}
        if not self.progress and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
            extra["tqdm_class"] = _SilentBar
        try:
            path = Path(hf_hub_download(self.repo_id, remote, repo_type="dataset", revision=self.revision,
                                        cache_dir=self.cache_dir, endpoint=self.endpoint, force_download=force,
                                        **extra))
        except self._errors() as exc:
            raise self.error(exc, remote) from None
        if not self.pinned:
            self._pin(remote, path)
        return path

    def error(self, exc: BaseException, remote: str, depth: int = 0) -> PgolfError:
        """One line for an exception raised by huggingface_hub while fetching `remote`."""
        from huggingface_hub import constants
        from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError, RevisionNotFoundError)

        endpoint = self.endpoint or constants.ENDPOINT
        cause = exc.__cause__
        if isinstance(exc, LocalEntryNotFoundError):
            if cause is not None and type(cause).__name__ == "FileMetadataError":
                return PgolfError(f"{self.label}: {endpoint} does not answer like a Hugging Face Hub "
                                  f"({_one_line(cause)})")
            return PgolfError(f"{self.label}: cannot reach {endpoint} to fetch {remote}, and it is not in the "
                              f"local Hub cache (offline? check the network or HF_ENDPOINT)")
        if isinstance(exc, (*_transport_errors(), ConnectionError)):
            return PgolfError(f"{self.label}: network error fetching {remote} from {endpoint}: {_one_line(exc)}")
        if isinstance(exc, _remote_not_found()):
            at = f" at revision {self.revision}" if self.revision else ""
            return _NotFound(f"{self.label}: {remote} not found{at}")
        if isinstance(exc, RevisionNotFoundError):
            return PgolfError(f"{self.label}: revision {self.revision} not found")
        if isinstance(exc, GatedRepoError):
            return PgolfError(f"{self.label}: the dataset repository is gated: accept its terms on the Hub and log in")
        if isinstance(exc, RepositoryNotFoundError):
            return PgolfError(f"{self.label}: dataset repository not found at {endpoint} (or private: log in first)")
        if isinstance(exc, HfHubHTTPError):
            status = getattr(getattr(exc, "response", None), "status_code", "?")
            return PgolfError(f"{self.label}: fetching {remote} failed: HTTP {status}")
        if isinstance(exc, ValueError) and cause is not None and depth < 3:
            return self.error(cause, remote, depth + 1)  # "force download failed due to the above error"
        if isinstance(exc, ValueError):
            return PgolfError(f"{self.label}: cannot fetch {remote}: {_one_line(exc)}")
        return PgolfError(f"{self.label}: fetching {remote} failed: {_one_line(exc)}")


def _remote_not_found() -> type[BaseException]:
    from huggingface_hub import errors

    # huggingface_hub >= 1.0 splits the remote case from the local-cache one; before, EntryNotFoundError was remote.
    return getattr(errors, "RemoteEntryNotFoundError", errors.EntryNotFoundError)


def _problem(path: Path, expected_size: int | None) -> str | None:
    """Why `path` is not a whole copy of the file, or None when it is."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    if expected_size is not None and size != expected_size:
        return f"{size} bytes, the Hub says {expected_size}"
    if path.suffix == ".bin":
        try:
            read_header(path)
        except PgolfError as exc:
            return str(exc)
    return None


def _place(src: Path, dst: Path) -> None:
    """Hard-link (else copy) `src` to `dst` through a temporary name, so `dst` is never partial."""
    src = src.resolve()  # the Hub cache holds symlinks to blobs: link the blob itself
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.part")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, tmp)
        except OSError:  # another file system, or links not supported
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PgolfError(f"{dst}: cannot write: {exc.strerror or exc}") from None


def _relative(value: object, what: str, where: str) -> PurePosixPath:
    """A repository-relative path from the manifest, refusing absolute paths and `..`."""
    path = PurePosixPath(value) if isinstance(value, str) and value else None
    if path is None or path.is_absolute() or ".." in path.parts:
        raise PgolfError(f"{where}: {what} is not a relative path inside the repository: {value!r}")
    return path


def _entries(manifest: object, key: str, where: str) -> list[dict]:
    items = manifest.get(key) if isinstance(manifest, dict) else None
    if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
        raise PgolfError(f"{where}: malformed: needs a '{key}' list of objects")
    return items


def _count(stats: object, key: str, where: str, name: str) -> int:
    value = stats.get(key) if isinstance(stats, dict) else None
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = -1
    if n < 0 or isinstance(value, bool):
        raise PgolfError(f"{where}: malformed: {name} has no stats.{key} count (got {value!r})")
    return n


@dataclass
class _Layout:
    """What one export holds: train and val shard counts, the tokenizer files (the model first, relative to the
    root), and whether the val shards have byte sidecars."""

    n_train: int
    n_val: int
    tokenizer_files: list[PurePosixPath]
    sidecar: bool


def _from_manifest(manifest: object, dataset: str, spec: Variant | None, label: str, remote: str) -> _Layout | str:
    """The layout of `dataset` as the repository's manifest `remote` gives it, or (when the manifest has no such
    entry) why not, as a phrase."""
    where = f"{label}: {remote}"
    datasets = _entries(manifest, "datasets", where)
    tokenizers = _entries(manifest, "tokenizers", where)
    entry = next((d for d in datasets if d.get("name") == dataset), None)
    if entry is None:
        known = sorted(str(d.get("name", "")).removeprefix("fineweb10B_") for d in datasets)
        return f"not in {remote} (available: {', '.join(known) or 'none'})"
    tok_name = entry.get("tokenizer_name")
    tok = next((t for t in tokenizers if t.get("name") == tok_name), None)
    if tok is None:
        raise PgolfError(f"{where}: tokenizer {tok_name!r} of {dataset} is not in its 'tokenizers' list")
    stats = entry.get("stats")
    n_train, n_val = _count(stats, "files_train", where, dataset), _count(stats, "files_val", where, dataset)
    if not tok.get("model_path"):
        raise PgolfError(f"{where}: tokenizer {tok['name']!r} of {dataset} has no SentencePiece model_path "
                         f"(pgolf needs a .model tokenizer)")
    files = [_relative(tok[key], f"tokenizer {key}", where) for key in ("model_path", "vocab_path", "path")
             if tok.get(key)]
    sidecar = bool(entry.get("val_bytes_glob")) or (spec is not None and spec.byte_sidecar)
    return _Layout(n_train, n_val, files, sidecar)


def _read_manifest(src: _Mirror | _Hub, remote: str, copy: Path) -> object:
    """The repository's manifest (always from the source, never a copy from an earlier run); a copy is kept."""
    where = f"{src.label}: {remote}"
    manifest_file = src.fetch(remote)
    try:
        raw = manifest_file.read_bytes()
        manifest = json.loads(raw.decode("utf-8"))
    except OSError as exc:
        raise PgolfError(f"{where}: cannot read {manifest_file}: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PgolfError(f"{where}: not valid JSON ({_one_line(exc)})") from None
    try:
        atomic_write_bytes(copy, raw)
    except OSError as exc:
        raise PgolfError(f"{copy}: cannot write: {exc.strerror or exc}") from None
    return manifest


def _from_listing(src: _Mirror | _Hub, folder: str, spec: Variant, why: str) -> _Layout:
    """The layout of a table variant from its dataset folder's file list and the table's tokenizer."""
    try:
        names = src.list_dir(folder)
    except _NotFound:
        raise PgolfError(f"{src.label}: {why}, and {folder} is not in the repository either") from None
    n_val = count_numbered(names, "val", f"{src.label}: {folder}")
    if n_val == 0:
        raise PgolfError(f"{src.label}: {why}, and {folder} holds no fineweb_val_NNNNNN.bin shards")
    n_train = count_numbered(names, "train", f"{src.label}: {folder}")
    return _Layout(n_train, n_val, [PurePosixPath(spec.tokenizer)], spec.byte_sidecar)


def download_fineweb(out_dir: str | os.PathLike, *, variant: str = "sp1024", train_shards: int = 80,
                     repo_id: str | None = None, remote_root: str | None = None, with_docs: bool = False,
                     revision: str | None = None, progress: bool = True, hub_dir: str | os.PathLike | None = None,
                     endpoint: str | None = None, cache_dir: str | os.PathLike | None = None) -> DownloadResult:
    """Download (or resume) one variant of a hosted export into `out_dir`, in the official layout:
    `out_dir/datasets/<folder>/` (all val shards with their byte sidecars where the export has them, the first
    `train_shards` train shards, the tokenizer model and pgolf's `manifest.json`) and `out_dir/tokenizers/` (the
    tokenizer files); `with_docs` adds `out_dir/docs_selected.jsonl` and its sidecar.

    `variant` is a key of `VARIANTS` (its repository and root are the defaults) or any variant `fineweb10B_<variant>`
    of the manifest of `repo_id` (default `DEFAULT_REPO`). `hub_dir` reads a local mirror instead of the Hub;
    `endpoint` / `cache_dir` override huggingface_hub's defaults. Every failure is a one-line `PgolfError`."""
    out_dir = Path(out_dir)
    if train_shards < 0:
        raise PgolfError(f"train_shards must be >= 0 (got {train_shards})")
    spec = variant_spec(variant)
    repo_id = repo_id or (spec.repo_id if spec else DEFAULT_REPO)
    if remote_root is None:
        remote_root = spec.remote_root if spec else DEFAULT_ROOT
    dataset = spec.dataset if spec else f"fineweb10B_{variant}"
    src: _Mirror | _Hub = (_Mirror(Path(hub_dir)) if hub_dir is not None else
                           _Hub(repo_id, revision, endpoint, Path(cache_dir) if cache_dir else None, progress))
    root = remote_root.strip("/")
    prefix = f"{root}/" if root else ""
    manifest_remote = f"{prefix}manifest.json"
    dataset_rel = PurePosixPath("datasets") / dataset

    # Kept for reference, namespaced by repository so another repository's manifest is never mistaken for this one's.
    copy = out_dir / "manifests" / repo_id.replace("/", "--") / manifest_remote
    try:
        manifest = _read_manifest(src, manifest_remote, copy)
    except _NotFound:
        if spec is None:
            raise
        layout: _Layout | str = f"{manifest_remote} not found"
    else:
        layout = _from_manifest(manifest, dataset, spec, src.label, manifest_remote)
        if isinstance(layout, str):
            if spec is None:
                raise PgolfError(f"{src.label}: variant {variant} {layout}")
            layout = f"{dataset} {layout}"
    if isinstance(layout, str):  # a table variant the manifest does not describe: list its folder
        layout = _from_listing(src, f"{prefix}{dataset_rel}", spec, layout)
    if train_shards > layout.n_train:
        raise PgolfError(f"{src.label}: {dataset} has {layout.n_train} train shards; cannot download {train_shards}")

    plan = [dataset_rel / shard_name("val", i) for i in range(layout.n_val)]
    if layout.sidecar:
        plan += [dataset_rel / shard_name(SIDECAR_SPLIT, i) for i in range(layout.n_val)]
    plan += [dataset_rel / shard_name("train", i) for i in range(train_shards)]
    plan += layout.tokenizer_files
    if with_docs:
        plan += [PurePosixPath(f) for f in DOCS_FILES]

    dataset_dir = out_dir / dataset_rel
    model_local = out_dir / layout.tokenizer_files[0]
    result = DownloadResult(dataset_dir=dataset_dir, tokenizer_path=dataset_dir / model_local.name)
    for rel in tqdm(plan, desc=f"fineweb {variant}", unit="file", disable=not progress, file=sys.stderr):
        remote, local = f"{prefix}{rel}", out_dir / rel
        expected = None
        if local.exists():
            expected = src.size(remote)
            if _problem(local, expected) is None:
                result.skipped += 1
                result.files.append(local)
                continue
        fetched = src.fetch(remote)
        if _problem(fetched, expected) is not None:
            # The cached copy is damaged too (a hard link shares the damaged local file's data): fetch it afresh.
            fetched = src.fetch(remote, force=True)
            problem = _problem(fetched, expected)
            if problem is not None:
                raise PgolfError(f"{src.label}: {remote} is damaged: {problem}")
        _place(fetched, local)
        result.files.append(local)
    if not (result.tokenizer_path.exists() and os.path.samefile(model_local, result.tokenizer_path)):
        _place(model_local, result.tokenizer_path)
    result.revision = src.revision
    result.manifest = import_data_dir(dataset_dir, result.tokenizer_path, progress=progress, reuse=True,
                                      source={"repo_id": repo_id, "revision": src.revision, "variant": variant})
    return result
