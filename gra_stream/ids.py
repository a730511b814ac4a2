"""Ids are content hashes: the same input gives the same id on every machine and every rerun."""
import hashlib
from collections.abc import Iterable

SEP = "\x1f"


def content_id(*parts: object) -> str:
    """16 hex digits of SHA-256 over the parts, joined with an ASCII unit separator."""
    return hashlib.sha256(SEP.join(map(str, parts)).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def seed_int(*parts: object) -> int:
    """A 31-bit integer from the parts: a per-request sampling seed that a rerun reproduces."""
    return int(content_id(*parts)[:8], 16) & 0x7FFFFFFF


def hashes(keys: Iterable[str], *, before: tuple = (), after: tuple = ()):
    """SHA-256 of (*before, key, *after) for every key: the fixed parts encoded once, not per key."""
    head = "".join(f"{p}{SEP}" for p in before).encode("utf-8", "surrogatepass")
    tail = "".join(f"{SEP}{p}" for p in after).encode("utf-8", "surrogatepass")
    sha = hashlib.sha256
    return (sha(head + key.encode("utf-8", "surrogatepass") + tail) for key in keys)


def content_ids(keys: Iterable[str], *, before: tuple = (), after: tuple = ()) -> list[str]:
    """`content_id(*before, key, *after)` for every key."""
    return [d.hexdigest()[:16] for d in hashes(keys, before=before, after=after)]


def seed_ints(keys: Iterable[str], *, before: tuple = (), after: tuple = ()) -> list[int]:
    """`seed_int(*before, key, *after)` for every key."""
    return [int.from_bytes(d.digest()[:4], "big") & 0x7FFFFFFF for d in hashes(keys, before=before, after=after)]
