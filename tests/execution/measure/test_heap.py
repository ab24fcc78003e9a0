"""The allocator's free pages go back to the system (glibc, as on every machine exprun runs)."""

from __future__ import annotations

import psutil

from runner.execution.measure.heap import give_back_free_pages

BLOCK = 4096  # below glibc's mmap threshold: these live in the heap, not in their own maps
BLOCKS = 20_000  # ~80 MB


def test_freed_blocks_in_the_middle_of_the_heap_leave_the_rss_once_given_back() -> None:
    process = psutil.Process()
    blocks = [bytearray(BLOCK) for _ in range(BLOCKS)]  # bytearray zero-fills: pages touched
    del blocks[:-1]  # the last one pins the top of the heap, so free() alone cannot shrink it
    held = process.memory_info().rss
    give_back_free_pages()
    given_back = held - process.memory_info().rss
    assert given_back > BLOCK * BLOCKS // 2, f"only {given_back / 1e6:.1f} MB given back"
