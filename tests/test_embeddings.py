"""The embedders: the hashing one (fake runs and tests), whose remembered word buckets must not change a
vector, and MiniLM, whose vector of a text must not depend on the texts embedded with it."""
import hashlib
import re
import threading
import time

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


def test_a_minilm_vector_is_the_same_alone_and_beside_any_other_texts():
    """all-MiniLM-L6-v2, the diversity filter's default model: batch sizes are performance knobs and a
    resumed run cuts its batches where the killed one did not, so a text's vector must not depend on the
    texts embedded with it."""
    import gzip
    import json
    from pathlib import Path

    import torch

    with gzip.open(Path(__file__).resolve().parent.parent / "data" / "seeds" / "alpaca_52k_en.jsonl.gz", "rt") as rows:
        texts = [json.loads(line)["en_instruction"] for line, _ in zip(rows, range(600))] + ["", "Add 2 and 3."]
    embedder = embeddings.MiniLMEmbedder()
    together = embedder.embed(texts)
    assert together.shape == (len(texts), DIM) and together.dtype == np.float32
    assert np.allclose(np.linalg.norm(together, axis=1), 1, atol=1e-5)
    assert np.array_equal(embedder.embed(texts[::-1])[::-1], together)
    assert np.array_equal(embedder.embed(texts, batch=7), together)
    assert np.array_equal(np.concatenate([embedder.embed([t]) for t in texts[:60]]), together[:60])
    threads = torch.get_num_threads()
    for n in (1, 3):  # batches embedded one after another, or three at once on threads of their own
        torch.set_num_threads(n)
        try:
            assert np.array_equal(embedder.embed(texts), together), f"{n} thread(s)"
        finally:
            torch.set_num_threads(threads)
        assert torch.get_num_threads() == threads
    assert embedder.embed([]).shape == (0, DIM)
    question, paraphrase, unrelated = embedder.embed(["How many apples does Tom have left?", "How many apples are "
                                                      "left for Tom?", "Write a poem about the sea."])
    assert question @ paraphrase > question @ unrelated + 0.3, "still the model: a paraphrase is nearer"


class SlowModel:
    """Stands in for MiniLM, whose loading takes seconds: counts how often it is made."""
    made = 0

    def __init__(self):
        time.sleep(0.3)
        SlowModel.made += 1


def test_the_embedder_is_made_once_when_two_threads_ask_for_it_while_it_loads(monkeypatch):
    """A worker loads MiniLM on a thread of its own as it starts (executors.warm_worker); a batch that needs
    it meanwhile waits for that load instead of starting a second one."""
    monkeypatch.setattr(embeddings, "MiniLMEmbedder", SlowModel)
    monkeypatch.setattr(SlowModel, "made", 0)
    embeddings._embedder.cache_clear()
    try:
        loading = threading.Thread(target=embeddings.get_embedder, args=(embeddings.MINILM,))
        loading.start()
        time.sleep(0.05)
        mine = embeddings.get_embedder(embeddings.MINILM)
        loading.join()
        assert SlowModel.made == 1 and embeddings.get_embedder(embeddings.MINILM) is mine
    finally:
        embeddings._embedder.cache_clear()
