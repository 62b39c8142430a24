import numpy as np
import pytest

from dupstream.errors import StateError
from state.hashes import ExactHashStore, PDQStore
from state.index import FaissIndex, NumpyIndex


def _unit(rng, n, d):
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_faiss_matches_the_numpy_oracle():
    rng = np.random.default_rng(1)
    data, queries = _unit(rng, 500, 32), _unit(rng, 20, 32)
    fi, ni = FaissIndex(dim=32), NumpyIndex(dim=32)
    for i, v in enumerate(data):
        tenant = "a" if i % 2 else "b"
        fi.add(f"img{i}", tenant, v)
        ni.add(f"img{i}", tenant, v)
    assert len(fi) == len(ni) == 500
    for q in queries:
        for tenant in (None, "a"):
            got = fi.search(q, 10, tenant=tenant)
            want = ni.search(q, 10, tenant=tenant)
            assert [h.image_id for h in got] == [h.image_id for h in want]
            assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-5)
            if tenant:
                assert all(h.tenant == tenant for h in got)


def test_re_adding_is_idempotent_and_dimension_checked():
    fi = FaissIndex(dim=4)
    v = np.array([1, 0, 0, 0], np.float32)
    assert fi.add("x", None, v) == fi.add("x", None, v)
    assert len(fi) == 1
    with pytest.raises(StateError):
        fi.add("y", None, np.ones(5, np.float32))


def test_exact_and_pdq_stores_are_tenant_scoped():
    ex = ExactHashStore()
    ex.add("abc", "t1", "img1")
    assert ex.lookup("abc", "t1") == "img1" and ex.lookup("abc", "t2") is None
    pdq = PDQStore(capacity=1)
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 256, (2, 32), dtype=np.uint8)
    pdq.add("A", "t1", a)
    pdq.add("B", "t2", b)  # grows past capacity
    hit = pdq.nearest(np.stack([b, a]), "t1")
    assert hit.image_id == "A" and hit.distance == 0 and hit.variant == 1
    assert pdq.nearest(a, "t3") is None
