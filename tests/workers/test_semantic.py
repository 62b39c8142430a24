"""The paper's semantic embedding and the object graph."""

from __future__ import annotations

import numpy as np

from dupstream.workers.coco import class_index
from dupstream.workers.detector import Detections
from dupstream.workers.graph import (
    PRIOR,
    SPATIAL,
    build_graph,
    cooccurrence_prior,
    structural_prior,
)
from dupstream.workers.semantic import (
    BLOCK_DIMS,
    COLOUR_NAMES,
    SEMANTIC_DIM,
    Objects,
    colour_histogram,
    select_objects,
    semantic_vector,
)

PERSON, DOG, CUP, FORK = (class_index(n) for n in ("person", "dog", "cup", "fork"))


def objects(boxes, labels, scores=None) -> Objects:
    n = len(labels)
    return Objects(
        boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
        labels=np.asarray(labels, np.int64),
        scores=np.asarray(scores if scores is not None else [0.9] * n, np.float32),
        colours=np.full((n, len(COLOUR_NAMES)), 1 / len(COLOUR_NAMES), np.float32),
    )


def test_colour_histogram_names_colours():
    red = np.zeros((10, 10, 3), np.uint8)
    red[..., 0] = 220
    assert COLOUR_NAMES[int(np.argmax(colour_histogram(red)))] == "red"
    blue = np.zeros((10, 10, 3), np.uint8)
    blue[..., 2] = 200
    assert COLOUR_NAMES[int(np.argmax(colour_histogram(blue)))] == "blue"
    white = np.full((10, 10, 3), 250, np.uint8)
    assert COLOUR_NAMES[int(np.argmax(colour_histogram(white)))] == "white"
    assert np.isclose(colour_histogram(white).sum(), 1.0)


def test_semantic_vector_fixed_length_unit_norm_and_empty():
    assert SEMANTIC_DIM == sum(BLOCK_DIMS.values()) == 476
    v = semantic_vector(objects([[0.1, 0.1, 0.5, 0.9]], [PERSON]))
    assert v.shape == (SEMANTIC_DIM,) and np.isclose(np.linalg.norm(v), 1.0)
    assert (v >= 0).all()
    e = semantic_vector(Objects.empty())
    assert e.shape == (SEMANTIC_DIM,) and not e.any()


def test_semantic_vector_sees_class_position_and_order_invariance():
    a = objects([[0.0, 0.0, 0.3, 0.6], [0.6, 0.5, 0.9, 0.9]], [PERSON, DOG])
    b = objects([[0.6, 0.5, 0.9, 0.9], [0.0, 0.0, 0.3, 0.6]], [DOG, PERSON])
    np.testing.assert_allclose(semantic_vector(a), semantic_vector(b), atol=1e-6)
    moved = objects([[0.7, 0.0, 1.0, 0.6], [0.0, 0.5, 0.3, 0.9]], [PERSON, DOG])
    other = objects([[0.0, 0.0, 0.3, 0.6], [0.6, 0.5, 0.9, 0.9]], [CUP, FORK])
    va = semantic_vector(a)
    assert 0.5 < float(va @ semantic_vector(moved)) < 0.999  # same objects, other places
    assert float(va @ semantic_vector(other)) < float(va @ semantic_vector(moved))


def test_select_objects_caps_at_k_by_confidence_times_size():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 300, (20, 2))
    wh = rng.uniform(5, 100, (20, 2))
    boxes = np.concatenate([xy, xy + wh], 1)
    scores = rng.uniform(0.2, 1.0, 20)
    dets = Detections.build(boxes, rng.integers(0, 80, 20), scores, width=400, height=400)
    rgb = np.zeros((400, 400, 3), np.uint8)
    objs = select_objects(rgb, dets, k=12)
    assert len(objs) == 12
    size = np.sqrt(np.prod(dets.boxes[:, 2:] - dets.boxes[:, :2], 1)) / 400
    rank = np.sort(dets.scores * size)[::-1][:12]
    np.testing.assert_allclose(np.sort(objs.scores * objs.sizes)[::-1], rank, rtol=1e-5)
    assert objs.boxes.min() >= 0 and objs.boxes.max() <= 1
    assert len(build_graph(objs, k=5).labels) == 5


def test_graph_edge_rules():
    objs = objects(
        [[0.0, 0.0, 0.2, 0.2],   # 0
         [0.1, 0.1, 0.3, 0.3],   # 1: overlaps 0 (IoU 0.14) and near it
         [0.8, 0.8, 1.0, 1.0],   # 2: far from both
         [0.75, 0.0, 0.95, 0.2]],  # 3: far from all
        [PERSON, DOG, CUP, FORK],
    )
    g = build_graph(objs, None)
    pairs = {tuple(e) for e in g.edge_index.T.tolist()}
    assert pairs == {(0, 1), (1, 0)}
    assert set(g.edge_kind.tolist()) == {SPATIAL}
    g2 = build_graph(objs, structural_prior())  # cup and fork: both "kitchen"
    pairs2 = {tuple(e) for e in g2.edge_index.T.tolist()}
    assert pairs2 == {(0, 1), (1, 0), (2, 3), (3, 2)}
    kinds = dict(zip(map(tuple, g2.edge_index.T.tolist()), g2.edge_kind.tolist(), strict=True))
    assert kinds[(2, 3)] == PRIOR
    w = dict(zip(map(tuple, g2.edge_index.T.tolist()), g2.edge_weight.tolist(), strict=True))
    assert w[(0, 1)] == 1.0 and w[(2, 3)] == 0.5
    assert g.x.shape == (4, 16)
    single = build_graph(objects([[0, 0, 1, 1]], [PERSON]), structural_prior())
    assert single.edge_index.shape == (2, 0)


def test_cooccurrence_prior():
    sets = [[PERSON, DOG], [PERSON, DOG], [PERSON], [CUP]]
    p = cooccurrence_prior(sets, min_support=2)
    assert p.shape == (80, 80) and np.allclose(p, p.T)
    assert p.min() >= 0 and p.max() <= 1 and np.allclose(np.diag(p), 1)
    assert np.isclose(p[PERSON, DOG], 2 / 3)  # 2 images with both / 3 with either
    assert p[CUP, FORK] == 0.5  # COCO supercategory "kitchen"
    assert p[PERSON, CUP] == 0.0
    assert cooccurrence_prior(sets, min_support=3)[PERSON, DOG] == 0.0
