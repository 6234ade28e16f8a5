"""The stored form of an embedding: the model's pooled features, L2-normalised, times
a fixed projection to DIM dimensions, scaled to int8. DIM bytes a content.

Measured (tests/test_vectors.py, tests/test_similar_real.py): over a synthetic
library of 10,000 vectors shaped like EfficientNet-Lite0's (57% zeros, 79% of the
energy in 64 of 1280 dimensions, unrelated photos at cosine ~0.15), recall@10
against float32 cosine on the full features was 0.88 at 128 dimensions, 0.92 at
256, 0.96 at 512; float16 instead of int8 changed nothing at any of them (the
projection loses what little is lost, not the rounding). 256 int8 bytes keeps a
photo's row in the database under 512 bytes; 512 would not.

The projection is a matrix of +-1/sqrt(DIM) whose signs are the bits of SHAKE-256
over SEED and the input size: the same on every machine and every numpy version,
for as long as CODEC names it. Changing any of it is a new CODEC, whose vectors
are never compared with the old ones (a new embedding space, labelsd.store.embeddings).

A score is the cosine of two codes (the int8 vectors as they are stored): a copy
outside the library of a library photo scores as the photo itself would.

numpy is imported inside the functions: the store names CODEC with every vector it
writes, and commands that never touch a vector do not pay for numpy.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

DIM = 256
SEED = b"labelsd/embedding-projection/1"
CODEC = "rp256-int8/1"  # recorded with every stored vector (the embedding space)


@lru_cache(maxsize=4)
def projection(features: int) -> np.ndarray:
    """The fixed (features, DIM) float32 projection for inputs of `features` floats."""
    import numpy as np

    raw = hashlib.shake_256(SEED + b":%d" % features).digest(features * DIM // 8)
    bits = np.unpackbits(np.frombuffer(raw, np.uint8)).reshape(features, DIM)
    matrix = (bits.astype(np.float32) * 2 - 1) / np.float32(np.sqrt(DIM))
    matrix.flags.writeable = False
    return matrix


def encode(features: np.ndarray) -> np.ndarray:
    """Pooled features (n, F) float -> codes (n, DIM) int8. An all-zero row (a blank
    picture can give one) stays zero, and scores 0 against everything."""
    import numpy as np

    x = np.asarray(features, np.float32)
    if x.ndim == 1:
        x = x[None]
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0] = 1
    # einsum's own loop, not BLAS: a BLAS matmul here left OpenBLAS's threads spinning
    # for ~100 ms after each batch, a core's worth taken from the model and the decoders
    # (the service with embeddings ran at 0.935 of without; 0.99 after). 0.5 ms a batch of 8.
    y = np.einsum("ij,jk->ik", x / norms, projection(x.shape[1]), optimize=False)
    peak = np.abs(y).max(axis=1, keepdims=True)
    peak[peak == 0] = 1
    return np.rint(y * (np.float32(127) / peak)).astype(np.int8)


def to_bytes(code: np.ndarray) -> bytes:
    import numpy as np

    return np.ascontiguousarray(code, np.int8).tobytes()


def from_bytes(blob: bytes) -> np.ndarray:
    import numpy as np

    code = np.frombuffer(bytes(blob), np.int8)
    if code.shape != (DIM,):
        raise ValueError(f"a stored vector of {code.size} bytes, not {DIM}")
    return code


def inverse_norms(codes: np.ndarray) -> np.ndarray:
    """1/|code| per row, float32 (0 for an all-zero code)."""
    import numpy as np

    norms = np.linalg.norm(np.asarray(codes, np.float32).reshape(-1, DIM), axis=1)
    out = np.zeros_like(norms)
    np.divide(1, norms, out=out, where=norms > 0)
    return out


def unit(code: np.ndarray) -> np.ndarray:
    """A code as a float32 unit vector (zeros for a zero code): what a query is."""
    import numpy as np

    v = np.asarray(code, np.float32).reshape(DIM)
    return v * inverse_norms(v)[0]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(unit(a) @ unit(b))


__all__ = ["CODEC", "DIM", "cosine", "encode", "from_bytes", "inverse_norms", "projection",
           "to_bytes", "unit"]
