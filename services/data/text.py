"""Word-level tokenisation, shared by training (vocabulary from the training split) and predict (raw strings)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np

PAD, UNKNOWN = 0, 1  # ids 0 and 1; words start at 2
_WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def build_vocabulary(texts: Iterable[str], max_tokens: int) -> list[str]:
    """The `max_tokens - 2` most frequent words (ties by first appearance), after padding and unknown."""
    counts = Counter(word for text in texts for word in words(text))
    return ["", "[UNK]", *(word for word, _ in counts.most_common(max_tokens - 2))]


def encode(texts: Sequence[str], vocabulary: Sequence[str], sequence_length: int) -> np.ndarray:
    """(N, sequence_length) int64 ids: truncated at the end, padded with 0, unknown words as 1."""
    index = {word: i for i, word in enumerate(vocabulary) if i >= 2}
    out = np.zeros((len(texts), sequence_length), np.int64)
    for row, text in enumerate(texts):
        ids = [index.get(word, UNKNOWN) for word in words(text)][:sequence_length]
        out[row, : len(ids)] = ids
    return out
