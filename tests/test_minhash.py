import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH
from hypothesis import given
from hypothesis import strategies as st

from gra_stream import minhash
from gra_stream.minhash import band_keys, shingle_hash, shingles, signatures

TEXTS = ["Write a haiku about autumn leaves falling in the park.",
         "Write a haiku about autumn leaves falling in the garden.",
         "Explain how a hash join works in a database engine.",
         "", "hi", "Ünïcödé tëxt, with   odd\tspacing"]


def reference(text, num_perm):
    m = MinHash(num_perm=num_perm, scheme="legacy", hashfunc=shingle_hash)
    m.update_batch(shingles(text))
    return m.hashvalues.astype(np.uint32)


@pytest.mark.parametrize("chunk_rows,chunk_texts", [(1024, 2048), (7, 2048), (1024, 4)])
def test_signatures_equal_datasketch_with_the_same_hash_function(monkeypatch, chunk_rows, chunk_texts):
    """7 rows: a text's shingles straddle chunks; 4 texts: the batch is hashed in two parts."""
    monkeypatch.setattr(minhash, "_ROWS_PER_CHUNK", chunk_rows)
    monkeypatch.setattr(minhash, "_TEXTS_PER_CHUNK", chunk_texts)
    sigs = signatures(TEXTS, num_perm=128)
    for text, sig in zip(TEXTS, sigs):
        assert np.array_equal(reference(text, 128), sig), text


@pytest.mark.parametrize("num_perm,seed", [(120, 1), (16, 7)])
def test_permutations_are_datasketchs(num_perm, seed):
    a, b = minhash.permutations(num_perm, seed)
    expected = MinHash(num_perm=num_perm, seed=seed, scheme="legacy").permutations
    assert np.array_equal(a, expected[0]) and np.array_equal(b, expected[1])


def test_normalisation_ignores_case_and_spacing():
    a, b = signatures(["Hello   World", "hello world"], num_perm=64)
    assert np.array_equal(a, b)


def test_near_duplicates_share_a_band_and_others_do_not():
    sigs = signatures(TEXTS[:3], num_perm=128)
    keys = band_keys(sigs, 32)
    assert set(keys[0]) & set(keys[1])
    assert not set(keys[0]) & set(keys[2])
    assert (sigs[0] == sigs[1]).mean() > 0.6 > (sigs[0] == sigs[2]).mean()


def test_band_keys_agree_with_datasketch_lsh_candidates():
    texts = [f"Tell me a fact about item number {i} and its history" for i in range(20)] + TEXTS
    sigs = signatures(texts, num_perm=64)
    keys = band_keys(sigs, 16)
    lsh = MinHashLSH(num_perm=64, params=(16, 4))
    for i, sig in enumerate(sigs):
        lsh.insert(str(i), MinHash(num_perm=64, hashvalues=sig, scheme="legacy"))
    for i, sig in enumerate(sigs):
        ours = {str(j) for j in range(len(texts)) if set(keys[i]) & set(keys[j])}
        assert ours == set(lsh.query(MinHash(num_perm=64, hashvalues=sig, scheme="legacy")))


def test_the_plain_python_hash_equals_the_vectorised_one():
    from gra_stream.minhash import shingle_hashes

    texts = ["abcdefgh", "Ünïcödé", "x", ""]
    hashes, owners = shingle_hashes(texts)
    expected = [shingle_hash(s) for t in texts for s in shingles(t)]
    assert hashes.tolist() == expected
    assert owners.tolist() == [i for i, t in enumerate(texts) for _ in shingles(t)]


@given(st.lists(st.integers(0, (1 << 64) - 1), max_size=50))
def test_the_mersenne_reduction_equals_the_modulo(values):
    """The signatures reduce (a * h + b) mod 2**64 by 2**61 - 1 with shifts and one subtraction."""
    x = np.array(values + [0, (1 << 61) - 1, 1 << 61, (1 << 62) - 2, (1 << 64) - 1], dtype=np.uint64)
    want = x % minhash.MERSENNE_PRIME
    minhash._mod_mersenne(x)
    assert x.tolist() == want.tolist()
