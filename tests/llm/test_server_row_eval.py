"""The scoring context's batching rule and its store of prompt heads (no model needed)."""

import ctypes

from gecko_factory.llm.server_row_eval import HeadStore, batch_ends


def test_batches_are_chunk_aligned_from_the_start_and_from_the_break():
    assert batch_ends(300, 128) == [128, 256, 300]
    assert batch_ends(300, 128, break_at=40) == [40, 168, 296, 300]
    assert batch_ends(100, 128, break_at=40) == [40, 100]
    # a break at either end is no break
    assert batch_ends(100, 128, break_at=100) == batch_ends(100, 128, break_at=0) == [100]


def test_a_head_batch_ends_where_the_same_head_would_end_it_whatever_follows():
    """The reuse rule: the batches up to a head's end depend on the head alone."""
    for n in (60, 200, 500):
        assert [e for e in batch_ends(n, 128, break_at=50) if e <= 50] == [50]
    long_head = [e for e in batch_ends(400, 128, break_at=300) if e <= 300]
    assert long_head == [e for e in batch_ends(900, 128, break_at=300) if e <= 300] == [128, 256, 300]


def test_the_head_store_drops_the_least_recently_used_beyond_its_bytes():
    store = HeadStore(max_bytes=250)

    def state(n: int):
        return (ctypes.c_uint8 * n)()

    store.put((1,), state(100))
    store.put((2,), state(100))
    assert store.get((1,)) is not None  # (1,) is now the most recent
    store.put((3,), state(100))  # 300 bytes: (2,), the least recent, goes
    assert (2,) not in store and (1,) in store and (3,) in store and store.bytes == 200
    store.put((4,), state(300))  # larger than the store: never kept
    assert (4,) not in store and store.hits == 1
