"""A deterministic 512-d instruction embedding standing in for the Universal Sentence Encoder.

RT-1's `natural_language_embedding` is USE (Cer et al. 2018), which cannot be downloaded here. This is a
seeded random projection of hashed n-gram features, i.e. the hashing trick (Weinberger et al. 2009, as in
scikit-learn's HashingVectorizer) with a dense random code per feature instead of a single bucket, so two
different features are nearly orthogonal (|cos| ~ 1/sqrt(512)) instead of colliding:

  features  word unigrams (weight 1), word bigrams (0.5), character trigrams of each word with boundary
            marks (0.25 per occurrence) — instructions sharing words or word stems are close
  code      each feature's 512 entries come from SHAKE-256 of a versioned prefix and the feature, read as
            uniform values in [-1, 1); no numpy RNG or Python `hash()`, so the vector is identical across
            processes, machines and library versions
  output    the weighted sum, L2-normalised (USE vectors are approximately unit-norm), float32

It captures surface overlap, not meaning: "open the drawer" and "pull the drawer out" share only words.
Datasets written with it say so in their description; never mix them with real RT-1 embeddings.
"""

from __future__ import annotations

import functools
import hashlib
import re

import numpy as np

EMBEDDING_DIM = 512
EMBEDDING_NAME = (
    "worldflow-hash-ngram-v1"  # change the name when the recipe changes: vectors are not comparable
)

_WORD = re.compile(r"[a-z0-9]+")
_WEIGHTS = {"w": 1.0, "b": 0.5, "c": 0.25}  # word unigram, word bigram, character trigram


@functools.lru_cache(maxsize=65536)
def _feature_code(feature: str) -> np.ndarray:
    """(512,) float64 uniform in [-1, 1), a pure function of the feature string."""
    digest = hashlib.shake_256(f"{EMBEDDING_NAME}|{feature}".encode()).digest(4 * EMBEDDING_DIM)
    words = np.frombuffer(digest, dtype="<u4").astype(np.float64)
    code = words / 2.0**31 - 1.0
    code.flags.writeable = False  # cached: callers must not modify it
    return code


def _features(text: str) -> list[tuple[str, float]]:
    words = _WORD.findall(text.lower())
    if not words:
        return [("e:", 1.0)]  # empty or punctuation-only text: one fixed vector, still unit norm
    feats = [(f"w:{w}", _WEIGHTS["w"]) for w in words]
    feats += [(f"b:{a} {b}", _WEIGHTS["b"]) for a, b in zip(words, words[1:])]
    for w in words:
        marked = f"<{w}>"
        feats += [(f"c:{marked[i : i + 3]}", _WEIGHTS["c"]) for i in range(len(marked) - 2)]
    return feats


def language_embedding(text: str) -> np.ndarray:
    """(512,) float32 unit vector for `text`; case and punctuation are ignored."""
    if not isinstance(text, str):
        raise TypeError(f"language_embedding takes a str, got {type(text).__name__}")
    total = np.zeros(EMBEDDING_DIM, np.float64)
    for feature, weight in _features(text):
        total += weight * _feature_code(feature)
    return (total / np.linalg.norm(total)).astype(np.float32)
