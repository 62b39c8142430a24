import numpy as np
import pytest

from dupstream.core.errors import StateError
from dupstream.state.idmap import IdMap
from dupstream.state.index import (
    FaissIndex,
    IndexSpec,
    NumpyIndex,
    build_index,
    gpu_available,
    load_index,
)
from tests.state.helpers import near, unit


def _filled(kind: str, data: np.ndarray, **opts):
    index = build_index(dim=data.shape[1], kind=kind, **opts)
    for chunk in np.array_split(data, 7):  # incremental adds, several sizes
        index.add(chunk)
    return index


def _tenants(n: int) -> IdMap:
    ids = IdMap()
    for i in range(n):
        ids.append(f"img{i}", ["a", "b", None][i % 3])
    return ids


def test_faiss_flat_matches_the_numpy_oracle_with_and_without_tenant_filter():
    rng = np.random.default_rng(1)
    data, queries = unit(rng, 600, 32), unit(rng, 15, 32)
    fi, ni = _filled("flat", data), _filled("numpy", data)
    ids = _tenants(len(data))
    assert len(fi) == len(ni) == 600
    for tenant in ("a", "b", None):
        allowed = ids.allowed(tenant)
        fs, fr = fi.search(queries, 10, allowed=allowed)
        ns, nr = ni.search(queries, 10, allowed=allowed)
        assert (fr == nr).all()
        assert np.allclose(fs, ns, atol=1e-5)
        assert all(ids.tenant(int(r)) == tenant for r in fr.ravel())


def test_unknown_tenant_and_k_larger_than_the_index():
    rng = np.random.default_rng(2)
    data = unit(rng, 5, 8)
    fi = _filled("flat", data)
    ids = _tenants(5)
    _, rows = fi.search(data[0], 10, allowed=ids.allowed("nobody"))
    assert (rows == -1).all()
    scores, rows = fi.search(data[0], 10)
    assert rows[0, 0] == 0 and (rows[0, 5:] == -1).all() and np.isinf(scores[0, 5:]).all()


@pytest.mark.parametrize(
    "kind,opts",
    [
        ("ivf", {"nlist": 16, "nprobe": 8}),
        ("auto", {}),
        ("ivfpq", {"nlist": 16, "nprobe": 8, "pq_m": 8}),
        ("ivfpq", {"nlist": 16, "nprobe": 8, "pq_m": 8, "opq": True, "opq_iters": 2}),
        ("hnsw", {"codec": "Flat"}),
        ("hnsw", {"codec": "SQ8"}),
    ],
)
def test_approximate_kinds_switch_at_the_threshold_and_find_near_copies(kind, opts):
    rng = np.random.default_rng(3)
    data = unit(rng, 3000, 32)
    index = build_index(dim=32, kind=kind, switch_at=1000, train_threads=1, **opts)
    index.add(data[:999])
    assert not index.approximate
    index.add(data[999:1500])  # crosses the threshold: trained on these, then filled
    assert index.approximate and len(index) == 1500
    index.add(data[1500:])  # incremental adds after the switch
    assert len(index) == 3000
    picks = rng.choice(3000, 50, replace=False)
    queries = np.stack([near(rng, data[i], 0.02) for i in picks])
    _, rows = index.search(queries, 10)
    assert np.mean(rows[:, 0] == picks) >= 0.95
    # tenant filter still applies after the switch
    ids = _tenants(3000)
    _, rows = index.search(queries, 5, allowed=ids.allowed("b"))
    assert all(ids.tenant(int(r)) == "b" for r in rows.ravel() if r >= 0)
    # serialise / load keeps the stage and the answers
    again = load_index(index.serialize())
    assert again.approximate and len(again) == 3000
    _, rows2 = again.search(queries, 10)
    assert np.mean(rows2[:, 0] == picks) >= 0.95


def test_background_switch_keeps_serving_exact_results_until_swapped():
    rng = np.random.default_rng(4)
    data = unit(rng, 2000, 16)
    index = build_index(dim=16, kind="ivf", switch_at=800, nlist=8, nprobe=8, background=True)
    index.add(data[:900])
    index.add(data[900:1200])  # may land while training runs in the thread
    _, rows = index.search(data[:20], 1)
    assert (rows[:, 0] == np.arange(20)).all()
    index.wait_trained()
    assert index.approximate and len(index) == 1200
    index.add(data[1200:])
    _, rows = index.search(data[1990:], 1)
    assert (rows[:, 0] == np.arange(1990, 2000)).all()


def test_flat_serialisation_round_trip_and_the_oracle_too():
    rng = np.random.default_rng(5)
    data = unit(rng, 100, 8)
    for kind in ("flat", "numpy"):
        index = _filled(kind, data)
        again = load_index(index.serialize())
        assert type(again) is type(index) and len(again) == 100
        assert (again.search(data[:3], 3)[1] == index.search(data[:3], 3)[1]).all()


def test_validation():
    with pytest.raises(StateError):
        IndexSpec(dim=8, kind="annoy")
    with pytest.raises(StateError):
        IndexSpec(dim=30, kind="ivfpq", pq_m=8)
    index = build_index(dim=4, kind="flat")
    with pytest.raises(StateError):
        index.add(np.ones((1, 5), np.float32))
    with pytest.raises(StateError):
        index.add(np.full((1, 4), np.nan, np.float32))
    with pytest.raises(StateError):
        load_index(b"\x93garbage")
    oracle = NumpyIndex(dim=3)
    with pytest.raises(StateError):
        oracle.add(np.ones((1, 4), np.float32))
    assert len(oracle) == 0


def test_idmap_rows_tenants_bitmaps_and_round_trip():
    ids = IdMap()
    for i in range(3000):  # grows the cached bitmaps several times
        ids.append(f"id-{i}", "t1" if i % 10 == 0 else "t2")
        if i in (5, 100, 2000):
            ids.allowed("t1")
    mask = ids.allowed("t1").mask(len(ids))
    assert mask.sum() == 300 and mask[::10].all()
    assert ids.row("id-30", "t1") == 30 and ids.row("id-30", "t2") is None
    assert ids.key(31) == ("id-31", "t2")
    single = IdMap()
    single.append("x", "only")
    assert single.allowed("only") is None  # every row is the tenant's: no filter needed
    again = IdMap.from_state(ids.to_state())
    assert len(again) == 3000 and again.row("id-2999", "t2") == 2999
    assert (again.allowed("t1").mask(3000) == mask).all()
    with pytest.raises(StateError):
        ids.append("", None)


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs faiss-gpu and a CUDA device")
def test_gpu_index_matches_the_oracle():
    rng = np.random.default_rng(6)
    data, queries = unit(rng, 2000, 32), unit(rng, 10, 32)
    gi = FaissIndex(IndexSpec(dim=32, kind="flat", gpu=True))
    gi.add(data)
    ni = _filled("numpy", data)
    ids = _tenants(2000)
    for tenant in (None, "a"):
        allowed = None if tenant is None else ids.allowed(tenant)
        assert (gi.search(queries, 5, allowed=allowed)[1] ==
                ni.search(queries, 5, allowed=allowed)[1]).all()
