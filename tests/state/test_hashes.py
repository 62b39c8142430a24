import numpy as np

from dupstream.state.hashes import ExactHashStore, PDQStore
from dupstream.state.idmap import IdMap


def _hamming(a, b):
    return int(np.unpackbits(np.bitwise_xor(a, b)).sum())


def test_exact_store_keeps_every_row_of_a_digest_in_order():
    ex = ExactHashStore()
    ex.add(0, "ab" * 32)
    ex.add(1, "cd" * 32)
    ex.add(2, "ab" * 32)
    ex.add(3, "not-hex-at-all")
    assert ex.rows("ab" * 32) == [0, 2] and ex.rows("ef" * 32) == []
    assert ex.rows("not-hex-at-all") == [3]
    again = ExactHashStore.from_state(ex.to_state())
    assert again.rows("ab" * 32) == [0, 2] and len(again) == 4


def test_pdq_nearest_matches_brute_force_with_variants_and_tenants():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (400, 32), dtype=np.uint8)
    ids, pdq = IdMap(), PDQStore()
    for i, c in enumerate(codes):
        row = ids.append(f"i{i}", "a" if i % 2 else "b")
        pdq.add(row, c)
    target = codes[11]  # tenant "a"
    flipped = target.copy()
    flipped[:2] ^= 0b101  # 4 bits away
    variants = np.stack([rng.integers(0, 256, 32, dtype=np.uint8), flipped])
    row, dist, variant = pdq.nearest(variants, allowed=ids.allowed("a"), max_distance=31)
    assert (row, dist, variant) == (11, 4, 1)
    # tenant "b" does not see row 11; its best is whatever brute force says
    got = pdq.nearest(variants, allowed=ids.allowed("b"))
    want = min((_hamming(v, codes[r]), r, j) for j, v in enumerate(variants)
               for r in range(0, 400, 2))
    assert (got[1], got[0]) == (want[0], want[1])
    assert pdq.nearest(variants, allowed=ids.allowed("b"), max_distance=31) is None
    assert pdq.nearest(variants, allowed=ids.allowed("zzz")) is None


def test_unusable_pdq_rows_never_match_and_survive_round_trip():
    pdq = PDQStore()
    zero = np.zeros(32, np.uint8)
    pdq.add(0, zero, usable=False)
    pdq.add(1, np.full(32, 255, np.uint8))
    assert pdq.nearest(zero) == (1, 256, 0)
    assert pdq.nearest(zero, max_distance=31) is None
    again = PDQStore.from_state(pdq.to_state())
    assert again.nearest(zero, max_distance=31) is None and len(again) == 2


def test_pdq_switches_to_a_binary_ivf_that_still_finds_near_copies_per_tenant():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    ids, pdq = IdMap(), PDQStore(switch_at=2000, nlist=16, nprobe=4)
    for i, c in enumerate(codes):
        pdq.add(ids.append(f"i{i}", "a" if i % 2 else "b"), c, usable=i != 2501)
    assert pdq.approximate and len(pdq) == 3000
    for i in (5, 1999, 2000, 2999):  # before and after the switch
        q = codes[i].copy()
        q[0] ^= 0b111  # 3 bits away
        variants = np.stack([rng.integers(0, 256, 32, dtype=np.uint8), q])
        tenant = "a" if i % 2 else "b"
        assert pdq.nearest(variants, allowed=ids.allowed(tenant), max_distance=31) == (i, 3, 1)
        other = "b" if i % 2 else "a"
        assert pdq.nearest(variants, allowed=ids.allowed(other), max_distance=31) is None
    assert pdq.nearest(codes[2501], max_distance=31) is None  # unusable
    again = PDQStore.from_state(pdq.to_state())
    assert again.approximate and again.nearest(codes[2999], max_distance=31) == (2999, 0, 0)
