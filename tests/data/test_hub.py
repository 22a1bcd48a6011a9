"""`download_fineweb` against a fake Hugging Face Hub on loopback, so the real `hf_hub_download` client runs.

The fake answers what huggingface_hub 2.x asks for (read from its `file_download.py`): `HEAD` and `GET` on
`/datasets/{repo}/resolve/{revision}/{path}`. Small files answer 200 with `ETag`, `X-Repo-Commit` and
`Content-Length`; shards are served like LFS files, a 302 to a second ("CDN") server on another port carrying
`X-Linked-Size` / `X-Linked-Etag`. Errors carry the Hub's `X-Error-Code` (RepoNotFound, RevisionNotFound,
EntryNotFound). The commit id is a hash of the repository's contents, so editing a served file makes a new commit,
as on the real Hub. The tree API (`GET /api/datasets/{repo}/tree/{revision}/{path}`, a JSON list of files) answers
`list_repo_tree`. Repositories hold tiny real shards and SentencePiece models (test_import.py's helpers), so the
downloaded folder gets a real pgolf manifest.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

import numpy as np
import pytest

from test_import import official_folder, tiny_tokenizer

from pgolf.data.hub import VARIANTS, download_fineweb, variant_spec
from pgolf.data.importer import official_tokenizer_name
from pgolf.data.manifest import MANIFEST, check_data_dir, load_val_sidecar
from pgolf.data.shards import read_shard, write_shard
from pgolf.errors import PgolfError

REPO = "someone/parameter-golf"
OTHER = "other/parameter-golf"
SHARDS = "datasets/datasets/fineweb10B_sp1024"


def _manifest(variants: dict[str, tuple[int, int]]) -> dict:
    """A manifest shaped like the one openai/parameter-golf `data/download_hf_docs_and_tokenize.py` writes."""
    datasets, tokenizers = [], []
    for variant, (n_train, n_val) in variants.items():
        vocab = int(variant.removeprefix("sp"))
        datasets.append({
            "name": f"fineweb10B_{variant}", "tokenizer_name": f"sp_bpe_{vocab}",
            "tokenizer_kind": "sentencepiece_bpe",
            "path": f"datasets/fineweb10B_{variant}", "train_glob": f"datasets/fineweb10B_{variant}/fineweb_train_*.bin",
            "val_glob": f"datasets/fineweb10B_{variant}/fineweb_val_*.bin", "vocab_size": vocab, "bos_id": 1,
            "eos_id": 2, "stats": {"docs_total": 10, "docs_val": 2, "docs_train": 8, "files_total": n_train + n_val,
                                   "files_val": n_val, "files_train": n_train, "tokens_total": 0, "tokens_val": 0,
                                   "tokens_train": 0}})
        tokenizers.append({"name": f"sp_bpe_{vocab}", "kind": "sentencepiece_bpe", "vocab_size": vocab, "bos_id": 1,
                           "eos_id": 2, "model_path": f"tokenizers/fineweb_{vocab}_bpe.model",
                           "vocab_path": f"tokenizers/fineweb_{vocab}_bpe.vocab"})
    return {"version": "10B", "num_docs": 10, "num_val_docs": 2, "tokenizers": tokenizers, "datasets": datasets}


def _make_repo(root: Path, variants: dict[str, tuple[int, int]] | None = None) -> Path:
    """A dataset repository tree in the official layout (root `datasets/`)."""
    variants = variants or {"sp1024": (3, 1)}
    base = root / "datasets"
    for seed, (variant, (n_train, n_val)) in enumerate(variants.items()):
        vocab = int(variant.removeprefix("sp"))
        official_folder(base / "datasets" / f"fineweb10B_{variant}", n_train, n_val, seed=seed)
        (base / "tokenizers").mkdir(parents=True, exist_ok=True)
        (base / "tokenizers" / f"fineweb_{vocab}_bpe.model").write_bytes(tiny_tokenizer())
        (base / "tokenizers" / f"fineweb_{vocab}_bpe.vocab").write_bytes(f"vocab-{vocab}".encode())
    (base / "docs_selected.jsonl").write_text('{"text": "a"}\n')
    (base / "docs_selected.source_manifest.json").write_text('{"num_docs": 1}')
    (base / "manifest.json").write_text(json.dumps(_manifest(variants), indent=2))
    return root


def _commit(repo_dir: Path) -> str:
    h = hashlib.sha1()
    for f in sorted(p for p in repo_dir.rglob("*") if p.is_file()):
        h.update(f.relative_to(repo_dir).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


class FakeHub:
    """Two loopback HTTP servers: the Hub (`endpoint`) and the CDN its LFS redirects point to."""

    def __init__(self, repos: dict[str, Path]) -> None:
        self.repos, self.requests = repos, []
        self.cdn = self._start(self._cdn_handler())
        self.hub = self._start(self._hub_handler())
        self.endpoint = f"http://127.0.0.1:{self.hub.server_address[1]}"
        self.cdn_base = f"http://127.0.0.1:{self.cdn.server_address[1]}"

    @staticmethod
    def _start(handler) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return server

    def close(self) -> None:
        for server in (self.hub, self.cdn):
            server.shutdown()  # returns at once if already shut down
            server.server_close()

    def gets(self, suffix: str) -> int:
        return sum(1 for server, method, path in self.requests if method == "GET" and path.endswith(suffix))

    def _base(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *args) -> None:
                pass

            def reply(self, status: int, headers: dict, body: bytes = b"") -> None:
                self.send_response(status)
                for key, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command == "GET" and body:
                    self.wfile.write(body)

            def do_HEAD(self) -> None:
                hub.requests.append((self.role, "HEAD", unquote(urlsplit(self.path).path)))
                self.serve(unquote(urlsplit(self.path).path))

            def do_GET(self) -> None:
                hub.requests.append((self.role, "GET", unquote(urlsplit(self.path).path)))
                self.serve(unquote(urlsplit(self.path).path))

        return hub, Handler

    def _hub_handler(self):
        hub, base = self._base()

        class Hub(base):
            role = "hub"

            def serve(self, path: str) -> None:
                m = (re.fullmatch(r"/datasets/([^/]+/[^/]+)/(resolve)/([^/]+)/(.+)", path)
                     or re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/(tree)/([^/]+)/?(.*)", path))
                if m is None:
                    return self.reply(404, {})
                repo, api, revision, rel = m.groups()
                if repo not in hub.repos:
                    return self.reply(401, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
                commit = _commit(hub.repos[repo])
                if revision not in ("main", commit):
                    return self.reply(404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
                if api == "tree":
                    return self.tree(hub.repos[repo], rel, commit)
                f = hub.repos[repo] / rel
                if not f.is_file():
                    return self.reply(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
                data = f.read_bytes()
                if f.suffix == ".bin":  # an LFS file: the Hub redirects to its CDN and describes the blob
                    return self.reply(302, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                                            "X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
                                            "X-Linked-Size": str(len(data)),
                                            "Location": f"{hub.cdn_base}/cdn/{quote(repo)}/{quote(rel)}"})
                self.reply(200, {"X-Repo-Commit": commit, "ETag": f'"{hashlib.sha1(data).hexdigest()}"'}, data)

            def tree(self, repo_dir: Path, rel: str, commit: str) -> None:
                folder = repo_dir / rel
                if not folder.is_dir():
                    return self.reply(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
                items = [{"type": "file", "path": f.relative_to(repo_dir).as_posix(), "size": f.stat().st_size,
                          "oid": hashlib.sha1(f.read_bytes()).hexdigest()} if f.is_file() else
                         {"type": "directory", "path": f.relative_to(repo_dir).as_posix(), "oid": "0" * 40}
                         for f in sorted(folder.iterdir())]
                self.reply(200, {"Content-Type": "application/json"}, json.dumps(items).encode())

        return Hub

    def _cdn_handler(self):
        hub, base = self._base()

        class Cdn(base):
            role = "cdn"

            def serve(self, path: str) -> None:
                m = re.fullmatch(r"/cdn/([^/]+/[^/]+)/(.+)", path)
                f = hub.repos[m.group(1)] / m.group(2) if m and m.group(1) in hub.repos else None
                if f is None or not f.is_file():
                    return self.reply(404, {})
                self.reply(200, {"Content-Type": "application/octet-stream"}, f.read_bytes())

        return Cdn


@pytest.fixture
def fake_hub(tmp_path):
    hub = FakeHub({REPO: _make_repo(tmp_path / "repo")})
    yield hub
    hub.close()


@pytest.fixture
def no_backoff(monkeypatch):
    """huggingface_hub retries a dead endpoint with exponential back-off; skip the sleeping."""
    import huggingface_hub.utils._http as http

    monkeypatch.setattr(http.time, "sleep", lambda seconds: None)


def _download(hub: FakeHub | str, tmp_path: Path, **kw):
    kw.setdefault("train_shards", 2)
    kw.setdefault("repo_id", REPO)
    endpoint = hub if isinstance(hub, str) else hub.endpoint
    return download_fineweb(tmp_path / "out", endpoint=endpoint, cache_dir=tmp_path / "cache", progress=False, **kw)


def _dead_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once the socket closes


def test_download_layout_matches_the_official_tool(fake_hub, tmp_path):
    res = _download(fake_hub, tmp_path, with_docs=True)
    out = tmp_path / "out"
    ds = out / "datasets" / "fineweb10B_sp1024"
    assert res.dataset_dir == ds and res.skipped == 0
    assert sorted(p.name for p in ds.iterdir() if not p.name.startswith(".")) == [
        "fineweb_1024_bpe.model", "fineweb_train_000000.bin", "fineweb_train_000001.bin", "fineweb_val_000000.bin",
        "manifest.json"]
    assert (out / "tokenizers" / "fineweb_1024_bpe.model").read_bytes() == tiny_tokenizer()
    assert (out / "tokenizers" / "fineweb_1024_bpe.vocab").read_bytes() == b"vocab-1024"
    assert (out / "docs_selected.jsonl").is_file() and (out / "docs_selected.source_manifest.json").is_file()
    assert res.tokenizer_path == ds / "fineweb_1024_bpe.model" and res.tokenizer_path.read_bytes() == tiny_tokenizer()
    manifest, _ = check_data_dir(ds)
    assert manifest == res.manifest and manifest["splits"]["train"]["files"] == ["fineweb_train_000000.bin",
                                                                                 "fineweb_train_000001.bin"]
    assert manifest["source"] == {"repo_id": REPO, "revision": _commit(fake_hub.repos[REPO]), "variant": "sp1024"}
    assert len(res.files) == 7 and all(p.is_file() for p in res.files)
    src = fake_hub.repos[REPO] / SHARDS / "fineweb_train_000001.bin"
    assert np.array_equal(read_shard(ds / "fineweb_train_000001.bin"), read_shard(src))
    commit = _commit(fake_hub.repos[REPO])
    assert res.revision == commit  # everything after the manifest is fetched at the manifest's commit
    assert all(f"/resolve/{commit}/" in p for s, _, p in fake_hub.requests if s == "hub" and "manifest" not in p)
    # the real client ran: shards came from the CDN after the Hub's LFS redirect, small files from the Hub itself
    assert fake_hub.gets("fineweb_train_000001.bin") == 1
    assert any(s == "cdn" for s, _, p in fake_hub.requests if p.endswith(".bin"))
    assert any(s == "hub" and m == "GET" for s, m, p in fake_hub.requests if p.endswith(".model"))
    # the remote manifest is kept for reference, namespaced by repository
    assert (out / "manifests" / "someone--parameter-golf" / "datasets" / "manifest.json").is_file()
    assert not list(out.rglob("*.part")) and not list(out.rglob(".*.tmp"))


def test_second_run_skips_and_a_damaged_file_is_fetched_again(fake_hub, tmp_path):
    _download(fake_hub, tmp_path)
    again = _download(fake_hub, tmp_path)
    assert again.skipped == len(again.files) == 5
    assert fake_hub.gets("fineweb_train_000000.bin") == 1  # nothing downloaded twice
    shard = tmp_path / "out" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000000.bin"
    # truncate in place: the local file is a hard link into the Hub cache, so the cached blob is damaged too
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 6)
    third = _download(fake_hub, tmp_path)
    assert third.skipped == len(third.files) - 1
    assert fake_hub.gets("fineweb_train_000000.bin") == 2
    assert np.array_equal(read_shard(shard), read_shard(fake_hub.repos[REPO] / SHARDS / "fineweb_train_000000.bin"))
    tok = tmp_path / "out" / "tokenizers" / "fineweb_1024_bpe.vocab"
    tok.unlink()
    tok.write_bytes(b"vocab-10")  # same kind of file, wrong size: the Hub's metadata catches it
    assert _download(fake_hub, tmp_path).skipped == 4 and tok.read_bytes() == b"vocab-1024"


def test_train_shard_limit(fake_hub, tmp_path):
    res = _download(fake_hub, tmp_path, train_shards=0)
    assert [p.name for p in res.files if p.suffix == ".bin"] == ["fineweb_val_000000.bin"]
    with pytest.raises(PgolfError, match="fineweb10B_sp1024 has 3 train shards; cannot download 4"):
        _download(fake_hub, tmp_path, train_shards=4)
    with pytest.raises(PgolfError, match="train_shards must be >= 0"):
        _download(fake_hub, tmp_path, train_shards=-1)


def test_unknown_variant_names_the_available_ones(fake_hub, tmp_path):
    with pytest.raises(PgolfError, match=r"^hub someone/parameter-golf: variant sp999 not in "
                                         r"datasets/manifest.json \(available: sp1024\)$"):
        _download(fake_hub, tmp_path, variant="sp999")


def test_manifest_is_fetched_afresh_and_never_shared_between_repos(tmp_path):
    hub = FakeHub({REPO: _make_repo(tmp_path / "a"), OTHER: _make_repo(tmp_path / "b", {"sp4096": (2, 1)})})
    try:
        _download(hub, tmp_path)
        with pytest.raises(PgolfError, match=r"fineweb10B_sp1024 not in datasets/manifest.json \(available: sp4096\), "
                                             r"and datasets/datasets/fineweb10B_sp1024 is not in the repository"):
            _download(hub, tmp_path, repo_id=OTHER)  # another repo: its own manifest, not the first one's
        res = _download(hub, tmp_path, repo_id=OTHER, variant="sp4096")
        assert res.tokenizer_path.name == "fineweb_4096_bpe.model"
        # the first repo gains a variant: the next run sees it (a new commit; nothing stale is read back)
        _make_repo(tmp_path / "a", {"sp1024": (3, 1), "sp2048": (1, 1)})
        res = _download(hub, tmp_path, variant="sp2048", train_shards=1)
        assert res.tokenizer_path.name == "fineweb_2048_bpe.model"
    finally:
        hub.close()


def test_missing_manifest_repo_or_revision_are_clean_errors(fake_hub, tmp_path):
    with pytest.raises(PgolfError, match=r"^hub someone/parameter-golf: elsewhere/manifest.json not found"):
        _download(fake_hub, tmp_path, remote_root="elsewhere")
    with pytest.raises(PgolfError, match=r"^hub nobody/nothing: dataset repository not found"):
        _download(fake_hub, tmp_path, repo_id="nobody/nothing")
    with pytest.raises(PgolfError, match=r"revision v9 not found"):
        _download(fake_hub, tmp_path, revision="v9")


def test_malformed_manifest_and_damaged_shard_are_clean_errors(fake_hub, tmp_path):
    manifest = fake_hub.repos[REPO] / "datasets" / "manifest.json"
    good = manifest.read_text()
    manifest.write_text("{not json")
    with pytest.raises(PgolfError, match="datasets/manifest.json: not valid JSON"):
        _download(fake_hub, tmp_path)
    broken = json.loads(good)
    del broken["datasets"][0]["stats"]["files_val"]
    manifest.write_text(json.dumps(broken))
    with pytest.raises(PgolfError, match="has no stats.files_val count"):
        _download(fake_hub, tmp_path)
    broken = json.loads(good)
    broken["tokenizers"][0]["vocab_path"] = "../../etc/passwd"
    manifest.write_text(json.dumps(broken))
    with pytest.raises(PgolfError, match="not a relative path inside the repository"):
        _download(fake_hub, tmp_path)
    manifest.write_text(good)
    shard = fake_hub.repos[REPO] / SHARDS / "fineweb_train_000001.bin"
    shard.write_bytes(b"\0" * 2048)  # bad magic on the Hub itself
    with pytest.raises(PgolfError, match=r"fineweb_train_000001.bin is damaged: .*bad magic"):
        _download(fake_hub, tmp_path)
    assert not (tmp_path / "out" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000001.bin").exists()


def test_unreachable_hub_is_a_clean_error(tmp_path, no_backoff):
    endpoint = _dead_endpoint()
    with pytest.raises(PgolfError, match=r"^hub someone/parameter-golf: cannot reach http://127\.0\.0\.1:\d+ to "
                                         r"fetch datasets/manifest.json"):
        _download(endpoint, tmp_path)


def test_offline_resume_uses_only_the_same_repos_cache(fake_hub, tmp_path, no_backoff):
    _download(fake_hub, tmp_path)
    fake_hub.close()  # the Hub goes away: the cached manifest of this repo and the local files suffice
    res = _download(fake_hub.endpoint, tmp_path)
    assert res.skipped == len(res.files) == 5
    with pytest.raises(PgolfError, match="cannot reach"):  # another repo's cached manifest is never used
        _download(fake_hub.endpoint, tmp_path, repo_id=OTHER)
    shard = tmp_path / "out" / "datasets" / "fineweb10B_sp1024" / "fineweb_val_000000.bin"
    with open(shard, "r+b") as f:  # damaged here and (through the hard link) in the cache: needs the network
        f.truncate(100)
    with pytest.raises(PgolfError, match=r"^hub someone/parameter-golf: network error fetching "
                                         r"datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin"):
        _download(fake_hub.endpoint, tmp_path)


def test_local_mirror_directory(tmp_path, capsys):
    mirror = _make_repo(tmp_path / "mirror", {"sp1024": (2, 1)})
    res = download_fineweb(tmp_path / "out", hub_dir=mirror, train_shards=1)
    assert [p.name for p in res.files if p.suffix == ".bin"] == ["fineweb_val_000000.bin", "fineweb_train_000000.bin"]
    assert res.tokenizer_path.read_bytes() == tiny_tokenizer() and res.revision is None
    assert "fineweb sp1024" in capsys.readouterr().err  # the progress bar
    again = download_fineweb(tmp_path / "out", hub_dir=mirror, train_shards=2, progress=False)
    assert again.skipped == 4 and len(again.files) == 5
    shutil.rmtree(mirror / SHARDS)
    with pytest.raises(PgolfError, match=r"^mirror .*: datasets/datasets/fineweb10B_sp1024/fineweb_val_000000.bin "
                                         r"not found$"):
        download_fineweb(tmp_path / "out2", hub_dir=mirror, train_shards=1, progress=False)
    with pytest.raises(PgolfError, match="hub mirror directory does not exist"):
        download_fineweb(tmp_path / "out3", hub_dir=tmp_path / "nowhere", progress=False)


# ------------------------------------------------------------------------------------------ the hosted variants

CASEOPS = "fineweb10B_sp8192_lossless_caps_caseops_v1_reserved"
CASEOPS_TOK = "fineweb_8192_bpe_lossless_caps_caseops_v1_reserved"


def _make_caseops_repo(root: Path, n_train: int = 3, n_val: int = 2) -> tuple[Path, dict]:
    """romeerp/parameter-golf-caseops-v1 as its record describes it: root `datasets/`, a val byte sidecar per val
    shard, the manifest entry's `val_bytes_glob` (the record's download_hf_docs_and_tokenize.py)."""
    base = root / "datasets"
    sidecars = official_folder(base / "datasets" / CASEOPS, n_train, n_val, sidecar=True, seed=5)
    (base / "tokenizers").mkdir(parents=True)
    (base / "tokenizers" / f"{CASEOPS_TOK}.model").write_bytes(tiny_tokenizer(caseops=True))
    (base / "tokenizers" / f"{CASEOPS_TOK}.vocab").write_bytes(b"caseops vocab")
    (base / "manifest.json").write_text(json.dumps({
        "version": "10B", "num_docs": 10, "num_val_docs": 2,
        "tokenizers": [{"name": "sp_bpe_8192_caseops", "kind": "sentencepiece_bpe", "vocab_size": 8192,
                        "model_path": f"tokenizers/{CASEOPS_TOK}.model",
                        "vocab_path": f"tokenizers/{CASEOPS_TOK}.vocab",
                        "text_transform": "lossless_caps_caseops_v1", "reserve_text_transform_controls": True}],
        "datasets": [{"name": CASEOPS, "tokenizer_name": "sp_bpe_8192_caseops", "path": f"datasets/{CASEOPS}",
                      "train_glob": f"datasets/{CASEOPS}/fineweb_train_*.bin",
                      "val_glob": f"datasets/{CASEOPS}/fineweb_val_*.bin",
                      "val_bytes_glob": f"datasets/{CASEOPS}/fineweb_val_bytes_*.bin",
                      "stats": {"files_train": n_train, "files_val": n_val}}]}))
    return root, sidecars


HOSTED = {"willdepueoai/parameter-golf": ("w", {"sp1024": (2, 1)}),
          "kevclark/parameter-golf": ("k", {"sp4096": (2, 1), "sp8192": (3, 2)})}


@pytest.fixture
def hosted(tmp_path):
    """The three hosted repositories on one fake Hub."""
    repos = {repo: _make_repo(tmp_path / d, variants) for repo, (d, variants) in HOSTED.items()}
    repos["romeerp/parameter-golf-caseops-v1"], sidecars = _make_caseops_repo(tmp_path / "r")
    hub = FakeHub(repos)
    hub.sidecars = sidecars
    yield hub
    hub.close()


def _fetch(hub: FakeHub, tmp_path: Path, variant: str, **kw):
    kw.setdefault("train_shards", 1)
    return download_fineweb(tmp_path / "out", variant=variant, endpoint=hub.endpoint, cache_dir=tmp_path / "cache",
                            progress=False, **kw)


def test_variant_table_names_the_hosted_exports():
    assert {v: (s.repo_id, s.remote_root, s.byte_sidecar) for v, s in VARIANTS.items()} == {
        "sp1024": ("willdepueoai/parameter-golf", "datasets", False),
        "sp4096": ("kevclark/parameter-golf", "datasets", False),
        "sp8192": ("kevclark/parameter-golf", "datasets", False),
        "sp8192-caseops": ("romeerp/parameter-golf-caseops-v1", "datasets", True)}
    assert VARIANTS["sp8192-caseops"].dataset == CASEOPS
    for spec in VARIANTS.values():  # the exporter's naming: folder fineweb10B_sp<N><rest>, fineweb_<N>_bpe<rest>.model
        assert spec.tokenizer == f"tokenizers/{official_tokenizer_name(spec.dataset)}"
    assert variant_spec("sp8192_lossless_caps_caseops_v1_reserved") is VARIANTS["sp8192-caseops"]  # official spelling
    assert variant_spec("sp2048") is None


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_comes_from_its_own_repository(hosted, tmp_path, variant):
    spec = VARIANTS[variant]
    res = _fetch(hosted, tmp_path, variant)
    asked = {re.match(r"/(?:api/)?datasets/([^/]+/[^/]+)/", p).group(1) for s, _, p in hosted.requests if s == "hub"}
    assert asked == {spec.repo_id}
    assert res.dataset_dir == tmp_path / "out" / "datasets" / spec.dataset
    assert res.tokenizer_path.name == PurePosixPath(spec.tokenizer).name
    manifest, _ = check_data_dir(res.dataset_dir)
    assert manifest == res.manifest and manifest["source"]["repo_id"] == spec.repo_id
    assert res.revision == _commit(hosted.repos[spec.repo_id])
    assert manifest["splits"]["train"]["files"] == ["fineweb_train_000000.bin"]
    if spec.byte_sidecar:
        assert manifest["caseops"] is True
        assert manifest["splits"]["val"]["byte_files"] == sorted(hosted.sidecars)
        expected = np.concatenate([hosted.sidecars[n] for n in sorted(hosted.sidecars)])
        assert np.array_equal(load_val_sidecar(res.dataset_dir), expected)
        assert manifest["splits"]["val"]["bytes"] == int(expected.sum())
    else:
        assert "caseops" not in manifest and not list(res.dataset_dir.glob("fineweb_val_bytes_*"))


def test_caseops_download_resumes_and_refuses_a_bad_sidecar(hosted, tmp_path):
    repo = hosted.repos["romeerp/parameter-golf-caseops-v1"]
    first = _fetch(hosted, tmp_path, "sp8192-caseops")
    again = _fetch(hosted, tmp_path, "sp8192-caseops")
    assert again.skipped == len(again.files) == len(first.files) == 2 + 2 + 1 + 2  # val, sidecars, train, tokenizer
    assert again.manifest == first.manifest
    side = repo / "datasets" / "datasets" / CASEOPS / "fineweb_val_bytes_000001.bin"
    write_shard(side, read_shard(side)[:-3])  # a whole file, but three entries short of its val shard
    with pytest.raises(PgolfError, match=r"fineweb_val_bytes_000001.bin: val byte sidecar has \d+ entries but "
                                         r"fineweb_val_000001.bin has \d+ tokens"):
        _fetch(hosted, tmp_path, "sp8192-caseops", train_shards=0)
    side.unlink()
    out = tmp_path / "fresh"
    with pytest.raises(PgolfError, match=rf"datasets/datasets/{CASEOPS}/fineweb_val_bytes_000001.bin not found"):
        download_fineweb(out, variant="sp8192-caseops", endpoint=hosted.endpoint, cache_dir=tmp_path / "cache",
                         progress=False, train_shards=0)
    assert not (out / "datasets" / CASEOPS / MANIFEST).exists()


def test_a_variant_the_manifest_lacks_is_found_by_listing_its_folder(hosted, tmp_path):
    repo = hosted.repos["kevclark/parameter-golf"]
    manifest = repo / "datasets" / "manifest.json"
    entries = json.loads(manifest.read_text())
    entries["datasets"] = [d for d in entries["datasets"] if d["name"] != "fineweb10B_sp4096"]
    manifest.write_text(json.dumps(entries))  # the repository's manifest lists only sp8192
    res = _fetch(hosted, tmp_path, "sp4096", train_shards=2)
    assert any("/tree/" in p for s, _, p in hosted.requests)
    assert res.revision == _commit(repo) and res.tokenizer_path.name == "fineweb_4096_bpe.model"
    assert check_data_dir(res.dataset_dir)[0]["splits"]["train"]["files"] == ["fineweb_train_000000.bin",
                                                                              "fineweb_train_000001.bin"]
    with pytest.raises(PgolfError, match="fineweb10B_sp4096 has 2 train shards; cannot download 3"):
        _fetch(hosted, tmp_path, "sp4096", train_shards=3)
    manifest.unlink()  # no manifest at all
    assert _fetch(hosted, tmp_path / "b", "sp8192").manifest["splits"]["val"]["files"] == [
        "fineweb_val_000000.bin", "fineweb_val_000001.bin"]
    (repo / "datasets" / "datasets" / "fineweb10B_sp8192" / "fineweb_train_000001.bin").unlink()
    with pytest.raises(PgolfError, match=r"fineweb10B_sp8192: fineweb_train_000001.bin is missing"):
        _fetch(hosted, tmp_path / "c", "sp8192")
    shutil.rmtree(repo / "datasets" / "datasets" / "fineweb10B_sp8192")
    with pytest.raises(PgolfError, match=r"^hub kevclark/parameter-golf: datasets/manifest.json not found, and "
                                         r"datasets/datasets/fineweb10B_sp8192 is not in the repository either$"):
        _fetch(hosted, tmp_path / "d", "sp8192")


def test_a_mirror_without_a_manifest_is_listed_too(tmp_path):
    mirror, sidecars = _make_caseops_repo(tmp_path / "mirror", n_train=2, n_val=1)
    (mirror / "datasets" / "manifest.json").unlink()
    res = download_fineweb(tmp_path / "out", variant="sp8192-caseops", hub_dir=mirror, train_shards=2, progress=False)
    assert res.manifest["caseops"] is True and res.manifest["splits"]["val"]["byte_files"] == sorted(sidecars)
    check_data_dir(res.dataset_dir)
