"""The hashing embedder (fake runs and tests): its remembered word buckets must not change a vector."""
import hashlib
import re

import numpy as np
from hypothesis import given, settings, strategies as st

from gra_stream import embeddings
from gra_stream.embeddings import DIM, HashingEmbedder


def reference(texts):
    """A hash per word, added one by one: what the embedder computes."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, text in enumerate(texts):
        for word in re.findall(r"\w+", text.lower()):
            h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")
            out[i, h % DIM] += 1.0 if (h >> 32) & 1 else -1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1, norms)


@settings(max_examples=60)
@given(st.lists(st.text(alphabet=st.sampled_from(list("ab cd Éß_9!\n")) | st.characters(), max_size=50), max_size=12))
def test_hashing_embeddings_equal_a_hash_per_word(texts):
    embedder = HashingEmbedder()
    assert np.array_equal(embedder.embed(texts), reference(texts))
    assert np.array_equal(embedder.embed(texts), reference(texts))  # again, from remembered buckets


def test_a_full_word_memory_is_emptied_not_grown(monkeypatch):
    monkeypatch.setattr(embeddings, "_CACHED_WORDS", 5)
    embedder = HashingEmbedder()
    texts = [" ".join(f"word{i}x{j}" for j in range(4)) for i in range(10)]
    assert np.array_equal(embedder.embed(texts), reference(texts))
    assert len(embedder._slots) <= 5
