"""The 3-layer GCN: shapes, determinism, the shipped weights and their checks."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dupstream.core.errors import WeightsError
from dupstream.workers.coco import class_index
from dupstream.workers.gcn import GraphEncoder, ObjectGCN, default_assets, save_gcn, to_batch
from dupstream.workers.graph import build_graph, structural_prior
from dupstream.workers.semantic import Objects

torch = pytest.importorskip("torch")


def objs(n: int, seed: int = 0) -> Objects:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 0.6, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0.05, 0.4, (n, 2))], 1).clip(0, 1)
    colours = rng.dirichlet(np.ones(9), n)
    return Objects(boxes.astype(np.float32), rng.integers(0, 80, n),
                   rng.uniform(0.2, 1, n).astype(np.float32), colours.astype(np.float32))


def test_three_gcn_layers_and_output_shape():
    from torch_geometric.nn import GCNConv

    model = ObjectGCN().eval()
    assert sum(isinstance(m, GCNConv) for m in model.modules()) == 3
    graphs = [build_graph(objs(n, n), structural_prior()) for n in (1, 3, 12)]
    with torch.no_grad():
        out = model(to_batch(graphs))
    assert out.shape == (3, 64)
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_shipped_encoder_is_deterministic_and_batch_independent():
    enc = GraphEncoder()
    sets = [objs(4, 1), Objects.empty(), objs(12, 2), objs(1, 3)]
    a = enc.embed(sets)
    b = enc.embed(sets)
    np.testing.assert_array_equal(a, b)
    assert not a[1].any()  # no objects: zero vector
    for i, o in enumerate(sets):
        np.testing.assert_allclose(enc.embed([o])[0], a[i], atol=1e-5)
    assert enc.prior.shape == (80, 80)
    assert enc.meta["sha256"] and enc.meta["seed"] == 0


def test_graph_embedding_is_invariant_to_object_order():
    enc = GraphEncoder()
    o = objs(5, 7)
    perm = np.array([3, 1, 4, 0, 2])
    p = Objects(o.boxes[perm], o.labels[perm], o.scores[perm], o.colours[perm])
    np.testing.assert_allclose(enc.embed([o])[0], enc.embed([p])[0], atol=1e-5)


def test_tampered_or_missing_weights_raise(tmp_path):
    src = default_assets()
    shutil.copy(src / "gcn.json", tmp_path / "gcn.json")
    model = ObjectGCN()
    save_gcn(model, structural_prior(), tmp_path / "gcn.safetensors")  # other weights
    with pytest.raises(WeightsError, match="sha256"):
        GraphEncoder(weights_path=tmp_path / "gcn.safetensors").load()
    with pytest.raises(WeightsError):
        GraphEncoder(weights_path=tmp_path / "absent.safetensors",
                     meta_path=tmp_path / "gcn.json").load()
    meta = json.loads((tmp_path / "gcn.json").read_text())
    from dupstream.workers.weights import sha256_file

    meta["sha256"] = sha256_file(tmp_path / "gcn.safetensors")
    (tmp_path / "gcn.json").write_text(json.dumps(meta))
    enc = GraphEncoder(weights_path=tmp_path / "gcn.safetensors")
    assert enc.embed([objs(3)]).shape == (1, 64)


def test_person_graph_closer_to_its_edit_than_to_a_kitchen():
    enc = GraphEncoder()
    person = class_index("person")
    a = Objects(np.array([[0.3, 0.1, 0.6, 0.9], [0.0, 0.5, 0.2, 0.8]], np.float32),
                np.array([person, person]), np.array([0.9, 0.6], np.float32),
                np.full((2, 9), 1 / 9, np.float32))
    shifted = Objects(a.boxes * 0.9 + 0.05, a.labels, a.scores * 0.95, a.colours)
    kitchen = Objects(a.boxes, np.array([class_index("cup"), class_index("fork")]), a.scores,
                      a.colours)
    e = enc.embed([a, shifted, kitchen])
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])
