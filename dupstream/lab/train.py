"""``dupstream train``: reproduce the shipped GCN, the fusion weight alpha and the calibration.

Recipe (all from photos that ship inside installed packages; nothing downloaded):

1. The packaged photos (``dupstream.lab.data.photos.PHOTOS``, de-duplicated by pixels) are split by
   source 60/20/20 with the seed (``split_sources``): no source, so no pair, crosses splits.
2. Per split, scenes = each photo, its two halves, and two-photo collages
   (``dupstream.lab.data.scenes``); pairs = every duplicate/near-duplicate edit of each scene
   (positives), non-overlapping scenes (negatives) and the two halves of one photo (same-scene
   negatives).
3. Every image goes through the production feature path (SSCD, YOLOv3-tiny, top-K objects,
   semantic vector); the co-occurrence prior is counted from the detections on the train scenes.
4. The GCN is trained on the train pairs whose two images both have objects: contrastive loss on
   the cosine of the graph embeddings (positives pulled to 1, negatives pushed below a margin),
   Adam, 64 pairs a batch, lr x0.1 every 20 epochs (the paper's schedule; lr 1e-3 as the GCN
   starts from scratch).
5. alpha is grid-searched in [0.1, 0.9] for max F1 on the validation pairs; the calibration of
   the fused score (Platt vs isotonic, by validation log-loss) is refitted and written to
   ``calibration.json``. Test-split metrics are recorded in ``gcn.json`` with the seed, the recipe,
   the loss curve and the weights' sha256.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from dupstream.lab.data.pairs import Pair, split_sources
from dupstream.lab.data.photos import PHOTOS, SAME_SCENE, load_photos
from dupstream.lab.data.scenes import make_scenes, scene_pairs
from dupstream.lab.fit import fit_calibrator, max_f1_threshold
from dupstream.workers.features import FeatureExtractor, ImageFeatures
from dupstream.workers.gcn import (
    GCN_FILE,
    GCN_META,
    GraphEncoder,
    ObjectGCN,
    default_assets,
    save_gcn,
)
from dupstream.workers.graph import build_graph, cooccurrence_prior
from dupstream.workers.semantic import DEFAULT_TOP_K
from dupstream.workers.similarity import Fusion, score_pair

GRAPH_KWARGS = {"iou_min": 0.1, "centre_max": 0.3, "prior_min": 0.25}
ALPHAS = tuple(round(0.1 * i, 1) for i in range(1, 10))
MARGIN = 0.5


def _features(
    extractor: FeatureExtractor, images: list[np.ndarray], chunk: int = 16
) -> list[ImageFeatures]:
    out: list[ImageFeatures] = []
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        blobs = [im.tobytes() + str(im.shape).encode() for im in part]
        feats = extractor.extract_decoded(blobs, part)
        for f in feats:
            if not isinstance(f, ImageFeatures):
                raise f
        out.extend(feats)  # type: ignore[arg-type]
    return out


def contrastive_loss(sim, label, margin: float = MARGIN):
    import torch

    pos = (1.0 - sim) ** 2
    neg = torch.clamp(sim - margin, min=0.0) ** 2
    return torch.where(label > 0.5, pos, neg).mean()


def train_gcn(
    graphs_a, graphs_b, labels, *, seed: int, epochs: int, lr: float, batch_pairs: int,
    log: Callable[[str], None],
) -> tuple[ObjectGCN, list[float]]:
    import torch

    from dupstream.workers.gcn import to_batch

    torch.manual_seed(seed)
    model = ObjectGCN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.1)
    rng = np.random.default_rng(seed)
    y_all = torch.tensor(labels, dtype=torch.float32)
    curve: list[float] = []
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(labels))
        total = 0.0
        for start in range(0, len(order), batch_pairs):
            idx = order[start : start + batch_pairs]
            ea = model(to_batch([graphs_a[i] for i in idx]))
            eb = model(to_batch([graphs_b[i] for i in idx]))
            loss = contrastive_loss((ea * eb).sum(1), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        curve.append(total / max(1, len(labels)))
        if epoch % 10 == 0 or epoch == epochs - 1:
            log(f"epoch {epoch + 1}/{epochs} loss {curve[-1]:.4f}")
    return model.eval(), curve


def _metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import f1_score, roc_auc_score

    out = {"pairs": int(len(labels)), "positives": int(labels.sum())}
    if 0 < labels.sum() < len(labels):
        out["auc"] = round(float(roc_auc_score(labels, scores)), 4)
    out["f1"] = round(float(f1_score(labels, scores >= threshold, zero_division=0)), 4)
    return out


def train(
    *,
    out_dir: str | Path | None = None,
    seed: int = 0,
    epochs: int = 50,
    lr: float = 1e-3,
    batch_pairs: int = 64,
    embedder: str = "sscd",
    copies_per_edit: int = 1,
    negatives_per_scene: int = 6,
    collages: int = 6,
    top_k: int = DEFAULT_TOP_K,
    log: Callable[[str], None] = print,
) -> dict:
    """Train the GCN, pick alpha, refit the calibration; write them to ``out_dir``.

    Writes ``gcn.safetensors``, ``gcn.json`` and ``calibration.json`` (default: the package's
    ``workers/assets``) and returns the contents of ``gcn.json``.
    """
    import torch

    from dupstream.workers.detector import build_detector
    from dupstream.workers.embedder import SSCDEmbedder

    t_start = time.perf_counter()
    out = Path(out_dir) if out_dir is not None else default_assets()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    photos = load_photos(list(PHOTOS))
    splits = split_sources(list(photos), seed=seed)
    pairs: dict[str, list[Pair]] = {}
    scene_count = {}
    train_scenes = []
    for i, (split, names) in enumerate(splits.items()):
        scenes = make_scenes({n: photos[n] for n in names}, seed=seed + i, collages=collages)
        scene_count[split] = len(scenes)
        if split == "train":
            train_scenes = scenes
        pairs[split] = scene_pairs(scenes, seed=seed + 10 + i, copies_per_edit=copies_per_edit,
                                   negatives_per_scene=negatives_per_scene)
    # a different photograph of the same scene (stereo pair): scored and reported, not fitted on
    stereo = load_photos(["motorcycle_left", "motorcycle_right"])
    pairs["stereo"] = [Pair(stereo["motorcycle_left"], stereo["motorcycle_right"], 0,
                            "same_scene", "motorcycle")]
    log("pairs: " + ", ".join(f"{k} {len(v)}" for k, v in pairs.items()))

    images: list[np.ndarray] = []
    index: dict[int, int] = {}
    for split_pairs in pairs.values():
        for p in split_pairs:
            for im in (p.a, p.b):
                if id(im) not in index:
                    index[id(im)] = len(images)
                    images.append(im)
    extractor = FeatureExtractor(
        embedder=SSCDEmbedder(variant=embedder),
        detector=build_detector("yolov3_tiny"),
        top_k=top_k,
    )
    t0 = time.perf_counter()
    feats = _features(extractor, images)
    log(f"features of {len(images)} images in {time.perf_counter() - t0:.0f} s")

    prior = cooccurrence_prior(
        [feats[index[id(s.rgb)]].objects.labels for s in train_scenes], min_support=2
    )
    graphs = [build_graph(f.objects, prior, **GRAPH_KWARGS) for f in feats]
    tr = [p for p in pairs["train"]
          if len(feats[index[id(p.a)]].objects) and len(feats[index[id(p.b)]].objects)]
    log(f"GCN pairs (both sides with objects): {len(tr)} of {len(pairs['train'])}, "
        f"{sum(p.label for p in tr)} positives")
    model, curve = train_gcn(
        [graphs[index[id(p.a)]] for p in tr], [graphs[index[id(p.b)]] for p in tr],
        [p.label for p in tr], seed=seed, epochs=epochs, lr=lr, batch_pairs=batch_pairs, log=log,
    )
    sha = save_gcn(model, prior, out / GCN_FILE)
    meta = {
        "seed": seed,
        "sha256": sha,
        "graph": {"k": top_k, **GRAPH_KWARGS},
        "training": {
            "epochs": epochs, "lr": lr, "lr_schedule": "x0.1 every 20 epochs", "optimizer": "Adam",
            "batch_pairs": batch_pairs, "loss": f"contrastive on cosine, margin {MARGIN}",
            "pairs": len(tr), "positives": int(sum(p.label for p in tr)),
            "loss_first": round(curve[0], 5), "loss_last": round(curve[-1], 5),
            "loss_every_5": [round(v, 5) for v in curve[::5]],
        },
        "data": {
            "photos": sorted(photos), "splits": splits,
            "scenes": scene_count, "same_scene_test": sorted(SAME_SCENE),
            "recipe": "dupstream.lab.data.scenes: photo + halves + collages per split; "
            f"copies_per_edit={copies_per_edit}, negatives_per_scene={negatives_per_scene}, "
            f"collages={collages}",
            "pairs": {k: len(v) for k, v in pairs.items()},
        },
        "prior": "max(COCO supercategory structure, Jaccard co-occurrence of YOLOv3-tiny "
        "detections on the train scenes, support >= 2)",
        "features": {"embedder": embedder, "detector": "yolov3_tiny (letterbox, conf 0.2)",
                     "top_k": top_k},
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }
    (out / GCN_META).write_text(json.dumps(meta, indent=1))

    encoder = GraphEncoder(weights_path=out / GCN_FILE)
    g = encoder.embed([f.objects for f in feats])
    for f, v in zip(feats, g, strict=True):
        f.graph = v

    def scores(split: str, fusion: Fusion) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s, v, y = [], [], []
        for p in pairs[split]:
            sc = score_pair(feats[index[id(p.b)]], feats[index[id(p.a)]], fusion=fusion)
            s.append(sc.fused)
            v.append(sc.visual)
            y.append(p.label)
        return np.array(s), np.array(v), np.array(y)

    grid = {}
    for alpha in ALPHAS:
        s, _, y = scores("val", Fusion(alpha=alpha))
        grid[alpha] = max_f1_threshold(s, y)[1]
    best = max(grid.values())
    alpha = min((a for a in ALPHAS if grid[a] >= best - 1e-9), key=lambda a: abs(a - 0.5))
    fusion = Fusion(alpha=alpha)
    log(f"alpha grid (val max F1): {grid} -> alpha {alpha}")

    tr_s, tr_v, tr_y = scores("train", fusion)
    va_s, va_v, va_y = scores("val", fusion)
    te_s, te_v, te_y = scores("test", fusion)
    cal = fit_calibrator(tr_s, tr_y, va_s, va_y, meta={
        "score": "fused S = alpha*Sv + (1-alpha)*Ss", "alpha": alpha, "seed": seed,
        "embedder": embedder, "detector": "yolov3_tiny", "gcn_sha256": sha,
        "fitted_by": "dupstream train",
    })
    cal.save(out / "calibration.json")
    vis_thr = max_f1_threshold(np.concatenate([tr_v, va_v]), np.concatenate([tr_y, va_y]))[0]
    sem = np.array([score_pair(feats[index[id(p.b)]], feats[index[id(p.a)]],
                               fusion=fusion).semantic["semantic"] is not None
                    for p in pairs["test"]])
    meta["fusion"] = {"alpha": alpha, "w_jaccard": 1.0, "w_cosine": 1.0, "w_graph": 1.0,
                      "val_max_f1_by_alpha": {str(a): round(f, 4) for a, f in grid.items()}}
    meta["test"] = {
        "fused": _metrics(te_s, te_y, cal.threshold),
        "visual_only": _metrics(te_v, te_y, vis_thr),
        "fused_pairs_with_objects": _metrics(te_s[sem], te_y[sem], cal.threshold),
        "visual_pairs_with_objects": _metrics(te_v[sem], te_y[sem], vis_thr),
    }
    stereo_pair = pairs["stereo"][0]
    meta["same_scene_stereo_pair"] = {
        k: v for k, v in score_pair(feats[index[id(stereo_pair.b)]],
                                    feats[index[id(stereo_pair.a)]], fusion=fusion)
        .evidence().items() if k in ("visual", "semantic", "jaccard", "semantic_cosine",
                                     "graph", "fused", "objects_matched")
    }
    meta["duration_s"] = round(time.perf_counter() - t_start, 1)
    (out / GCN_META).write_text(json.dumps(meta, indent=1))
    log(f"test: {json.dumps(meta['test'])}")
    log(f"wrote {out / GCN_FILE} (sha256 {sha[:12]}...), {out / GCN_META}, "
        f"{out / 'calibration.json'} in {meta['duration_s']} s")
    return meta

