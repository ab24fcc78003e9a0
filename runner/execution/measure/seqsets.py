"""Sets of sequence numbers whose size follows what is unsettled, not what was sent.

The books keep, per trial, which sequence numbers were acked, and per subscription which were
delivered and received, as compressed bitmaps (Roaring). Once a second (and when publishing
ends) they are compacted: every settled stretch, which is nearly all of a healthy trial,
becomes one run (a low-water mark, in effect), so a set costs a few bytes per stretch plus one
bit per number added since the last compaction, however many messages the trial sent. Only
what is out of order or missing keeps a bit of its own.
"""

from __future__ import annotations

from pyroaring import BitMap

SeqSet = BitMap


def compact(seqs: SeqSet) -> None:
    """Store settled stretches as runs and give back the memory they no longer need."""
    seqs.run_optimize()
    seqs.shrink_to_fit()


def to_bytes(seqs: SeqSet) -> bytes:
    """The set's portable form (Roaring's serialization), compacted first."""
    compact(seqs)
    return bytes(seqs.serialize())


def from_bytes(data: bytes) -> SeqSet:
    return SeqSet.deserialize(data)


def new_and_distinct(seqs: list[int], seen: SeqSet) -> SeqSet | None:
    """`seqs` as a set if none of them repeats or is in `seen` already, else None."""
    found = SeqSet(seqs)
    return found if len(found) == len(seqs) and found.isdisjoint(seen) else None


def strided(residues: list[int], period: int, limit: int) -> SeqSet:
    """Every number below `limit` that is one of `residues` modulo `period`."""
    found = SeqSet()
    for residue in residues:
        found |= SeqSet(range(residue, limit, period))
    return found
