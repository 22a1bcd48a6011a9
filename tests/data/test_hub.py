"""`download_fineweb` against a fake Hugging Face Hub: a loopback HTTP server that answers the real client's
requests (so the real `hf_hub_download` code path runs), and a local mirror directory."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest

from pgolf.data.hub import download_fineweb
from pgolf.data.shards import read_shard, write_shard
from pgolf.errors import PgolfError

REPO = "someone/parameter-golf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _make_repo(root: Path, n_train: int = 3) -> Path:
    """A hub repository tree in the official layout."""
    base = root / "datasets"
    ds = base / "datasets" / "fineweb10B_sp1024"
    rng = np.random.default_rng(0)
    for i in range(n_train):
        write_shard(ds / f"fineweb_train_{i:06d}.bin", rng.integers(0, 1024, size=500 + i))
    write_shard(ds / "fineweb_val_000000.bin", rng.integers(0, 1024, size=300))
    (base / "tokenizers").mkdir(parents=True)
    (base / "tokenizers" / "fineweb_1024_bpe.model").write_bytes(b"model-bytes")
    (base / "tokenizers" / "fineweb_1024_bpe.vocab").write_bytes(b"vocab-bytes")
    (base / "docs_selected.jsonl").write_text('{"text": "a"}\n')
    (base / "docs_selected.source_manifest.json").write_text("{}")
    manifest = {
        "datasets": [{"name": "fineweb10B_sp1024", "tokenizer_name": "sp_bpe_1024",
                      "stats": {"files_train": n_train, "files_val": 1}}],
        "tokenizers": [{"name": "sp_bpe_1024", "model_path": "tokenizers/fineweb_1024_bpe.model",
                        "vocab_path": "tokenizers/fineweb_1024_bpe.vocab"}],
    }
    (base / "manifest.json").write_text(json.dumps(manifest))
    return root


class _Handler(BaseHTTPRequestHandler):
    repo_dir: Path
    requests: list

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def _resolve(self) -> Path | None:
        prefix = f"/datasets/{REPO}/resolve/"
        path = unquote(self.path.split("?")[0])
        if not path.startswith(prefix):
            return None
        rel = path[len(prefix):].split("/", 1)[1]
        f = self.repo_dir / rel
        return f if f.is_file() else None

    def _headers(self, f: Path | None) -> None:
        if f is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = f.read_bytes()
        self.send_response(200)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()

    def do_HEAD(self) -> None:
        type(self).requests.append(("HEAD", self.path))
        self._headers(self._resolve())

    def do_GET(self) -> None:
        type(self).requests.append(("GET", self.path))
        f = self._resolve()
        self._headers(f)
        if f is not None:
            self.wfile.write(f.read_bytes())


@pytest.fixture
def fake_hub(tmp_path):
    repo = _make_repo(tmp_path / "repo")
    handler = type("H", (_Handler,), {"repo_dir": repo, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", repo, handler
    server.shutdown()
    server.server_close()


def _download(endpoint, tmp_path, **kw):
    kw.setdefault("train_shards", 2)
    return download_fineweb(tmp_path / "out", repo_id=REPO, endpoint=endpoint, cache_dir=tmp_path / "cache",
                            progress=False, **kw)


def test_download_layout_matches_the_official_tool(fake_hub, tmp_path):
    endpoint, repo, handler = fake_hub
    res = _download(endpoint, tmp_path, with_docs=True)
    ds = tmp_path / "out" / "datasets" / "fineweb10B_sp1024"
    assert res.dataset_dir == ds
    assert sorted(p.name for p in ds.glob("*.bin")) == ["fineweb_train_000000.bin", "fineweb_train_000001.bin",
                                                        "fineweb_val_000000.bin"]
    assert (tmp_path / "out" / "tokenizers" / "fineweb_1024_bpe.model").read_bytes() == b"model-bytes"
    assert (tmp_path / "out" / "tokenizers" / "fineweb_1024_bpe.vocab").is_file()
    assert (tmp_path / "out" / "docs_selected.jsonl").is_file()
    assert res.tokenizer_path == ds / "fineweb_1024_bpe.model" and res.tokenizer_path.read_bytes() == b"model-bytes"
    src = repo / "datasets" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000001.bin"
    assert np.array_equal(read_shard(ds / "fineweb_train_000001.bin"), read_shard(src))
    assert any(method == "GET" for method, _ in handler.requests)  # the real HTTP client path ran
    assert res.skipped == 0


def test_download_resumes_and_repairs(fake_hub, tmp_path):
    endpoint, _, _ = fake_hub
    _download(endpoint, tmp_path)
    again = _download(endpoint, tmp_path)
    assert again.skipped == len(again.files)
    shard = tmp_path / "out" / "datasets" / "fineweb10B_sp1024" / "fineweb_train_000000.bin"
    shard.write_bytes(shard.read_bytes()[:-5])  # a truncated local file is fetched again
    third = _download(endpoint, tmp_path)
    assert third.skipped == len(third.files) - 1
    read_shard(shard)


def test_train_shard_limit_and_unknown_variant(fake_hub, tmp_path):
    endpoint, _, _ = fake_hub
    with pytest.raises(PgolfError, match="has 3 train shards"):
        _download(endpoint, tmp_path, train_shards=4)
    with pytest.raises(PgolfError, match=r"variant sp999 not in datasets/manifest.json \(available: sp1024\)"):
        _download(endpoint, tmp_path, variant="sp999")


def test_missing_manifest_is_a_clean_error(fake_hub, tmp_path):
    endpoint, _, _ = fake_hub
    with pytest.raises(PgolfError, match="manifest.json not found"):
        _download(endpoint, tmp_path, remote_root="elsewhere")


def test_unreachable_hub_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda seconds: None)  # skip the client's retry back-off
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(PgolfError, match="someone/parameter-golf"):
        _download(f"http://127.0.0.1:{port}", tmp_path)


def test_local_mirror_directory(tmp_path):
    repo = _make_repo(tmp_path / "mirror", n_train=2)
    res = download_fineweb(tmp_path / "out", hub_dir=repo, train_shards=1, progress=False)
    assert [p.name for p in res.files if p.suffix == ".bin"] == ["fineweb_val_000000.bin", "fineweb_train_000000.bin"]
    assert res.tokenizer_path.is_file()
