import numpy as np

import dupstream.state.idmap
from dupstream.state.idmap import IdMap
from dupstream.state.keyindex import KeyIndex


def test_keyindex_matches_a_dict_of_lists_across_merges():
    rng = np.random.default_rng(0)
    ki, ref = KeyIndex(min_merge=16), {}
    keys = rng.integers(-50, 50, 1000)  # many duplicates, negative keys too
    for row, k in enumerate(keys.tolist()):
        ki.add(k, row)
        ref.setdefault(k, []).append(row)
        if row % 97 == 0:
            assert all(ki.get(q) == ref.get(q, []) for q in range(-55, 55))
    assert len(ki) == 1000 and ki.nbytes() < 16 * 1000 + 120 * 200
    built = KeyIndex.build(keys)
    assert all(built.get(q) == ref.get(q, []) for q in range(-55, 55))


def test_idmap_tells_colliding_key_hashes_apart(monkeypatch):
    monkeypatch.setattr(dupstream.state.idmap, "key64", lambda image_id, tenant: 42)
    ids = IdMap()
    for i in range(50):
        ids.append(f"img{i}", "t" if i % 2 else None)
    assert ids.row("img7", "t") == 7 and ids.row("img7", None) is None
    again = IdMap.from_state(ids.to_state())
    assert again.row("img8", None) == 8 and again.row("img49", "t") == 49
