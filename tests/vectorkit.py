"""Vectors for tests and benchmarks without a model: a synthetic library shaped like
EfficientNet-Lite0's pooled features, a store filled with contents, paths and
their stored vectors (through the writer's own `record_outcomes`), and real files
labelled as a labelsd older than embeddings left them (no vectors)."""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone

import numpy as np

from labelsd.records import Claim, Outcome, OutcomeKind, Prediction
from labelsd.store import contents, workqueue
from labelsd.vectors import codec

MODEL = "EfficientNetLite0/imagenet"
TOP3 = [Prediction(1, "tabby", "n02123045", 281, 0.8), Prediction(2, "tiger cat", "n02123159", 282, 0.1),
        Prediction(3, "Egyptian cat", "n02124075", 285, 0.05)]


def synthetic_features(n: int = 10_000, scenes: int = 500, dim: int = 1280, seed: int = 7) -> np.ndarray:
    """Features shaped like EfficientNet-Lite0's pooled ones on real photos (measured on
    scikit-image's: 57% zeros, 79% of the energy in 64 of the 1280 dimensions, unrelated
    photos at cosine ~0.15): photos of `scenes` scenes, each photo its scene's pattern
    plus its own share of noise (from 10% to 90%), through ReLU and a square."""
    rng = np.random.default_rng(seed)
    scene = rng.standard_normal((scenes, dim)) - 0.2
    of = rng.integers(0, scenes, n)
    noise = rng.uniform(0.1, 0.9, n)[:, None]
    x = scene[of] * np.sqrt(1 - noise ** 2) + noise * rng.standard_normal((n, dim))
    return (np.maximum(x, 0) ** 2).astype(np.float32)


def sha_of(i: int) -> str:
    return f"{i:064x}"


def fill(store, root, codes: np.ndarray | None, n: int | None = None, model: str = MODEL,
         names=None, start: int = 0) -> list[str]:
    """`n` photos under `root` (no files needed), each its own content, labelled, with
    `codes[i]` as its vector (None: labelled without one). Returns their paths."""
    n = len(codes) if n is None else n
    names = names or [f"{root}/img{start + i:05}.jpg" for i in range(n)]
    workqueue.enqueue(store, names)
    claims = {c.path: c for c in workqueue.claim(store, "test:fill", n)}
    outcomes = [Outcome(claims[p], OutcomeKind.CLASSIFIED, sha256=sha_of(start + i), size=1000 + i,
                        mtime_ns=1, width=640, height=480, format="JPEG", model=model,
                        predictions=list(TOP3),
                        embedding=None if codes is None else codec.to_bytes(codes[i]))
                for i, p in enumerate(names)]
    contents.record_outcomes(store, "test:fill", outcomes)
    return names


def labelled_before(store, photos, model: str, size: tuple[int, int] = (64, 48)) -> None:
    """These files as an older labelsd left them: labelled by `model`, with no vector."""
    workqueue.enqueue(store, photos)
    claims = {c.path: c for c in workqueue.claim(store, "older-labelsd", len(photos))}
    contents.record_outcomes(store, "older-labelsd", [Outcome(
        claims[str(p)], OutcomeKind.CLASSIFIED, sha256=hashlib.sha256(p.read_bytes()).hexdigest(),
        size=p.stat().st_size, mtime_ns=p.stat().st_mtime_ns, width=size[0], height=size[1],
        format="JPEG", model=model, predictions=list(TOP3)) for p in photos])


def now() -> datetime:
    return datetime.now(timezone.utc)


def claim(i: int, path: str = "/x.jpg", embed_only: str | None = None) -> Claim:
    return Claim(i, path, now(), 0, embed_only=embed_only)
