"""Ids are content hashes: the same input gives the same id on every machine and every rerun."""
import hashlib

SEP = "\x1f"


def content_id(*parts: object) -> str:
    """16 hex digits of SHA-256 over the parts, joined with an ASCII unit separator."""
    return hashlib.sha256(SEP.join(map(str, parts)).encode("utf-8", "surrogatepass")).hexdigest()[:16]


def seed_int(*parts: object) -> int:
    """A 31-bit integer from the parts: a per-request sampling seed that a rerun reproduces."""
    return int(content_id(*parts)[:8], 16) & 0x7FFFFFFF
