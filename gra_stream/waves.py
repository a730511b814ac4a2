"""Waves: the corpus flows through the stages in slices of seeds, so that the first kept samples are
committed (and queryable) while later seeds are still waiting for their first stage.

A wave is a range of seed ids: the seeds sorted by id (a content hash, so each wave is a random slice of
the corpus, not its first lines) and cut into waves of `waves.first_seeds`, then GROWTH times as many each
wave, up to LARGEST of the corpus or GROWTH times the first wave, whichever is larger. A corpus too small
for that to make several waves starts with a quarter of it instead (at least MIN_FIRST seeds), so that its
first samples, too, come before most of it is read; its later waves still grow, so that an engine gets
large batches once those first samples are out. Every row of every stage belongs to the wave of the seed
it comes from, so a stage pass over wave w takes the pending rows of seeds that sort below wave w's upper
bound. The cuts depend on the seeds alone, never on timing: a killed or stopped run resumes in the same
waves.

Within a round the waves run in order, each through every stage, and the ordered decisions (near-
duplicates at the gate, the diversity walk) take each wave against everything kept in earlier waves.
`first_seeds = 0` makes one wave per round: the whole-round walk of the paper. Once generation has
nothing left to do (a config change, a resumed run), a stage takes every wave in one pass; an ordered
stage's rows then come wave by wave, in the batches a pass per wave makes (`Scope.cuts`).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate


@dataclass(frozen=True)
class Scope:
    """What one stage pass may take: rows of rounds up to `rounds_open`, of seeds whose id sorts below
    `below` (None: every seed). An ordered stage's pass over several waves at once is given their `cuts`
    (the bounds between them): its rows then come wave by wave, and its batches end where a wave does,
    so that it makes the batches, and so the decisions, of one pass per wave."""
    rounds_open: int = 1
    below: str | None = None
    cuts: tuple[str, ...] = ()

    def seeds(self, column: str) -> str:
        """A SQL condition: the seed id in `column` belongs to this pass's waves."""
        return "TRUE" if self.below is None else f"{column} < '{self.below}'"

    def wave(self, column: str) -> str:
        """A SQL expression: the wave, counted from this pass's first, of the seed id in `column`."""
        if not self.cuts:
            return "0"
        whens = " ".join(f"WHEN {column} < '{cut}' THEN {i}" for i, cut in enumerate(self.cuts))
        return f"CASE {whens} ELSE {len(self.cuts)} END"


GROWTH = 4        # each wave this many times the one before ...
LARGEST = 1 / 4   # ... up to this share of the corpus (or GROWTH times the first wave, if larger)
MIN_FIRST = 16    # the smallest first wave a small corpus is given in place of `first_seeds`


def wave_sizes(seeds: int, first: int) -> list[int]:
    """The number of seeds in each wave: `first` (or a quarter of a corpus of fewer than 4 x `first`
    seeds, but at least MIN_FIRST), then GROWTH times more each wave, at most LARGEST of the corpus or
    GROWTH times the first wave, whichever is larger; one wave of everything when `first` is 0."""
    if first <= 0:
        return [seeds]
    first = min(first, max(MIN_FIRST, -(-seeds // 4)))
    if seeds <= first:
        return [seeds]
    cap = max(first * GROWTH, int(seeds * LARGEST))
    sizes, size, left = [], first, seeds
    while left:
        sizes.append(left if left - size < size // 2 else size)  # no small wave at the end
        left -= sizes[-1]
        size = min(size * GROWTH, cap)
    return sizes


@dataclass(frozen=True)
class Wave:
    below: str | None  # the id of the first seed past this wave (None for the last wave)
    through: int       # seeds in this wave and the ones before it


def plan(con, first: int) -> list[Wave]:
    """The waves of the seeds in `con`."""
    total = con.sql("SELECT count(*) FROM seeds").fetchall()[0][0]
    ends = list(accumulate(wave_sizes(total, first)))
    if len(ends) <= 1:
        return [Wave(None, total)]
    listed = ", ".join(map(str, ends[:-1]))
    bounds = [row[0] for row in con.sql(
        f"SELECT id FROM (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM seeds) "
        f"WHERE k IN ({listed}) ORDER BY k").fetchall()]
    return [Wave(below, through) for below, through in zip([*bounds, None], ends)]
