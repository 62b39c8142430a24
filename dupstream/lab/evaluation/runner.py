"""``dupstream eval``: build the data sets, compute the signals once, evaluate every method,
fit the shipped decision artefacts, measure scalability, write the report."""

from __future__ import annotations

import inspect
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dupstream.lab.evaluation.dataset import EvalSet
from dupstream.workers.gcn import default_assets

#: default sizes: ``dupstream eval --dataset all`` takes ~10-15 min on 2 CPU cores
DEFAULT_SIZES = {"mnist": {"n_sources": 300}, "coco": {"half_edits": 2},
                 "cctv": {"anchor_step": 8}}
QUICK_SIZES = {"mnist": {"n_sources": 40}, "coco": {"half_edits": 1, "max_photos": 10},
               "cctv": {"max_frames": 120}}
SCALABILITY_SIZES = (50, 100, 200)
#: the installed package's assets (what compare, scan and the stream load)
ASSETS = default_assets()


@dataclass
class EvalConfig:
    datasets: list[str]
    out: Path
    pairs: str | None = None
    seed: int = 0
    resamples: int = 1000
    quick: bool = False
    ship: bool = False
    scalability: tuple[int, ...] = SCALABILITY_SIZES
    detectors: list[str] | None = None  # detector swap backends (None: every one available)
    progress: bool = True
    embedder: str = "sscd"
    threads: int = 2
    detector: str = "yolov3_tiny"
    graph: bool = True
    command: str = ""
    extra: dict = field(default_factory=dict)


def build_dataset(name: str, cfg: EvalConfig) -> EvalSet:
    sizes = (QUICK_SIZES if cfg.quick else DEFAULT_SIZES)[name]
    if name == "mnist":
        from dupstream.lab.evaluation.mnist import build_mnist

        return build_mnist(seed=cfg.seed, **sizes)
    if name == "coco":
        from dupstream.lab.evaluation.coco import build_coco

        return build_coco(seed=cfg.seed, **sizes)
    if name == "cctv":
        from dupstream.lab.evaluation.cctv import build_cctv

        return build_cctv(seed=cfg.seed, **sizes)
    raise ValueError(f"unknown data set {name!r}")


def make_extractor(cfg: EvalConfig, detector: str | None = None):
    from dupstream.engine.build import build_extractor

    kwargs = {"embedder": cfg.embedder, "threads": cfg.threads}
    params = inspect.signature(build_extractor).parameters
    if "detector" in params:
        kwargs["detector"] = detector or cfg.detector
    if "graph" in params:
        kwargs["graph"] = cfg.graph
    return build_extractor(**kwargs)


def detector_names(extractor) -> tuple[str | None, list[str]]:
    """(the default extractor's detector, every detector backend the engine knows)."""
    det = getattr(extractor, "detector", None)
    try:
        from dupstream.workers.detector import DETECTORS
    except ImportError:
        return None, []
    return (getattr(det, "name", None) if det is not None else None,
            [d for d in DETECTORS if d != "none"])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPU cores ({cpu}), no GPU used, Python "
            f"{platform.python_version()}, {platform.system()} {platform.release()}")


def log(msg: str) -> None:
    print(f"[eval] {msg}", file=sys.stderr, flush=True)


def run(cfg: EvalConfig) -> Path:
    from dupstream.lab.evaluation.decisioneval import learned_decisions
    from dupstream.lab.evaluation.document import write_report
    from dupstream.lab.evaluation.evaluate import evaluate_set
    from dupstream.lab.evaluation.signals import build_image_table
    from dupstream.lab.evaluation.sources import packaged_dir

    t_start = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    if cfg.datasets and not (packaged_dir() / ".complete").exists():
        log(f"{packaged_dir()} is missing: the COCO-style and CCTV sets use pip-packaged images "
            "only (run `bash scripts/eval_data.sh` for the Debian-packaged ones)")
    extractor = make_extractor(cfg)
    default_det, all_dets = detector_names(extractor)
    results, tables = [], {}
    for name in cfg.datasets:
        t0 = time.perf_counter()
        ds = build_dataset(name, cfg)
        log(f"{name}: {len(ds.images)} images, {len(ds.pairs)} pairs")
        table = build_image_table(ds, extractor, seed=cfg.seed, progress=cfg.progress)
        res = evaluate_set(ds, table, seed=cfg.seed, resamples=cfg.resamples)
        res.learned = learned_decisions(res, table)
        if res.learned is not None:
            log(f"{name}: learned decision {res.learned['model']}: F1 {res.learned['f1']:.3f}, "
                f"AUC {res.learned['auc']:.3f}, ECE {res.learned['ece']:.3f} (test)")
            for kind, c in res.learned["same_scene_evidence"].items():
                log(f"{name}: {kind} test pairs: unique {c['unique']} / {c['n']}, with "
                    f"same_scene evidence {c['evidence']} / {c['n']}")
        res.timings_s = {**table.timings_s, "total": time.perf_counter() - t0}
        results.append(res)
        tables[name] = table
        save_pairs_csv(res, cfg.out / f"{name}_pairs.csv")
        log(f"{name}: done in {res.timings_s['total']:.0f} s")
    shipped = None
    if results:
        shipped = ship_artefacts(results, cfg)
    user = None
    if cfg.pairs:
        user = evaluate_user(cfg, extractor)
    swap = []
    if "coco" in cfg.datasets and default_det is not None:
        swap = detector_swap(next(r for r in results if r.ds.name == "coco"), cfg,
                             default_det, cfg.detectors or all_dets, tables["coco"])
    scal = []
    if cfg.scalability and results:
        from dupstream.lab.evaluation.scalability import measure

        src = next((r for r in results if r.ds.name == "coco"), results[0])
        log(f"scalability: dupstream scan over {cfg.scalability} images")
        scal = measure([im.rgb for im in src.ds.images], cfg.scalability, threads=cfg.threads)
    meta = {"command": cfg.command, "machine": machine(), "seed": cfg.seed,
            "resamples": cfg.resamples, "embedder": extractor.embedder.name,
            "detector": default_det or "none", "quick": cfg.quick,
            "elapsed_s": time.perf_counter() - t_start}
    kinds = per_kind(results, shipped, cfg)
    if kinds:
        from dupstream.lab.evaluation.perkind import load, save

        save(kinds, cfg.out / "per_kind.json")
        meta["before"] = load(cfg.extra.get("before"))
        meta["before_path"] = cfg.extra.get("before")
    md, _ = write_report(cfg.out, results, meta=meta, shipped=shipped, user=user, swap=swap,
                         scalability=scal, per_kind=kinds)
    log(f"report: {md} ({meta['elapsed_s']:.0f} s)")
    return md


def per_kind(results, shipped, cfg: EvalConfig) -> dict:
    """Recall per edit type / FPR per negative kind on each test split: the product as shipped
    (workers/assets), refitted on this run (when fitted), SSCD alone at its validation cut."""
    from dupstream.lab.evaluation.methods import VISUAL
    from dupstream.lab.evaluation.perkind import per_kind_table
    from dupstream.lab.evaluation.shipping import evaluate_policy
    from dupstream.workers.decision import default_calibrator, default_decision_model

    out = {}
    for r in results:
        te = r.split == "test"
        preds = {"shipped": evaluate_policy(r, default_calibrator(), default_decision_model(),
                                            domain=r.ds.domain)["pred"]}
        if shipped:
            preds["refitted"] = shipped["per_set"][r.ds.name]["domain"]["pred"]
        if r.learned is not None:
            preds["learned decision (shipped)"] = r.learned["pred"]
        vis = next((m for m in r.methods if m.name == VISUAL and m.available), None)
        if vis is not None:
            preds["SSCD alone"] = vis.pred
        out[r.ds.name] = per_kind_table(r.ds.arrays()["kind"][te], r.label[te], preds,
                                        resamples=cfg.resamples, seed=cfg.seed)
    return out


def save_pairs_csv(res, path: Path) -> None:
    import csv

    keys = [k for k, v in res.cols.items() if np.ndim(v) == 1]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["a", "b", "split", "kind", "label", *keys])
        for i, p in enumerate(res.ds.pairs):
            w.writerow([p.a, p.b, res.split[i], p.kind, p.label,
                        *[_cell(res.cols[k][i]) for k in keys]])


def _cell(v):
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    v = float(v)
    return "" if np.isnan(v) else round(v, 6)


def ship_artefacts(results, cfg: EvalConfig) -> dict:
    from dupstream.lab.evaluation.shipping import evaluate_policy, fit_shipping

    meta = {"seed": cfg.seed, "command": cfg.command or "dupstream eval",
            "embedder": cfg.embedder, "datasets": [r.ds.name for r in results],
            "quick": cfg.quick}
    cal, model = fit_shipping(results, meta=meta)
    cal.save(cfg.out / "calibration.json")
    model.save(cfg.out / "decision.json")
    if cfg.ship:
        shutil.copy(cfg.out / "calibration.json", ASSETS / "calibration.json")
        shutil.copy(cfg.out / "decision.json", ASSETS / "decision.json")
        log(f"shipped calibration.json and decision.json to {ASSETS}")
    per_set = {}
    for r in results:
        per_set[r.ds.name] = {
            "domain": evaluate_policy(r, cal, model, domain=r.ds.domain),
            "default": evaluate_policy(r, cal, model, domain=None),
            "fixed 0.5": evaluate_policy(r, cal, None, domain=None),
        }
    return {"calibrator": cal, "model": model, "per_set": per_set, "shipped": cfg.ship}


def evaluate_user(cfg: EvalConfig, extractor) -> dict:
    from dupstream.lab.evaluation import metrics as M
    from dupstream.lab.evaluation.methods import METHODS, available
    from dupstream.lab.evaluation.signals import build_image_table, pair_signals, product_signals
    from dupstream.lab.evaluation.userpairs import load_user_pairs
    from dupstream.lab.fit import max_f1_cut
    from dupstream.workers.decision import (
        DecisionPolicy,
        default_calibrator,
        default_decision_model,
    )

    ds = load_user_pairs(cfg.pairs, extractor)
    out = {"ds": ds, "rows": [], "pairs": []}
    if not ds.pairs:
        return out
    table = build_image_table(ds, extractor, seed=cfg.seed, progress=cfg.progress)
    arr = ds.arrays()
    cols = pair_signals(table, arr["a"], arr["b"])
    prod = product_signals(table, arr["a"], arr["b"])
    scores = prod.pop("scores")
    cols.update(prod)
    y = arr["label"]
    for m in METHODS:
        why = available(m, cols)
        if why is not None:
            out["rows"].append({"method": m.name, "note": why})
            continue
        s = m.score(cols, 0.5)
        cut, f1 = max_f1_cut(s, y)
        out["rows"].append({"method": m.name, "auc": M.auc(y, s), "oracle_f1": f1})
    policy = DecisionPolicy(calibrator=default_calibrator(), cutoffs=default_decision_model())
    preds, probs = [], []
    for i, s in enumerate(scores):
        kind, _, review = policy.decide(s)
        p = policy.p_copy(s)
        preds.append(kind != "unique")
        probs.append(p)
        out["pairs"].append({"a": ds.images[arr["a"][i]].note, "b": ds.images[arr["b"][i]].note,
                             "label": int(y[i]), "p_copy": p, "verdict": kind,
                             "review": review, "fused": float(cols["fused"][i])})
    prec, rec, f1 = M.prf(y, np.asarray(preds))
    out["shipped"] = {"precision": prec, "recall": rec, "f1": f1,
                      "ece": M.ece(y, np.asarray(probs)), "auc": M.auc(y, np.asarray(probs))}
    out["table"], out["cols"], out["probs"] = table, cols, np.asarray(probs)
    return out


def detector_swap(res, cfg: EvalConfig, default_det: str, backends: list[str],
                  default_table) -> list[dict]:
    """Full model with each detector backend on the COCO-style validation + test images
    (alpha and the cut on validation; F1, AUC, mAP on test)."""
    from dupstream.lab.evaluation import metrics as M
    from dupstream.lab.evaluation.evaluate import ranking_columns
    from dupstream.lab.evaluation.methods import OURS, by_name, semantic_score
    from dupstream.lab.evaluation.signals import build_image_table, pair_signals
    from dupstream.lab.fit import grid_alpha

    ds = res.ds
    rows = []
    arr = ds.arrays()
    sp = {s: arr["split"] == s for s in ("val", "test")}
    m = by_name(OURS)
    for backend in backends:
        t0 = time.perf_counter()
        if backend == default_det:
            table = default_table
        else:
            try:
                sub = _subset(ds, ("val", "test"))
                ex = make_extractor(cfg, detector=backend)
                if hasattr(ex.detector, "load"):
                    ex.detector.load()  # missing weights: say so before any work
                log(f"detector swap: {backend} on {len(sub.images)} images")
                table = build_image_table(sub, ex, seed=cfg.seed, progress=cfg.progress)
                table = _expand(table, ds, sub)
            except Exception as exc:  # a backend whose weights are missing: say so, go on
                rows.append({"detector": backend, "note": f"not available: {exc}"})
                continue
        if table.n_objects is None or not (table.n_objects >= 0).any():
            rows.append({"detector": backend, "note": "the detector failed on every image"})
            continue
        cols = pair_signals(table, arr["a"], arr["b"])
        ss = semantic_score(cols)
        alpha, cut, _ = grid_alpha(cols["visual"][sp["val"]], ss[sp["val"]],
                                   arr["label"][sp["val"]])
        s = m.score(cols, alpha)[sp["test"]]
        yt = arr["label"][sp["test"]]
        _, _, f1 = M.prf(yt, s >= cut)
        rc, rq, rr = ranking_columns(ds, table)
        aps = M.per_query_ap(rq, m.score(rc, alpha), rr)
        n_obj = table.n_objects[table.n_objects >= 0] if table.n_objects is not None else []
        rows.append({"detector": backend, "f1": f1, "auc": M.auc(yt, s),
                     "map": float(aps.mean()) if len(aps) else float("nan"), "alpha": alpha,
                     "objects_per_image": float(np.mean(n_obj)) if len(n_obj) else 0.0,
                     "seconds": time.perf_counter() - t0 if backend != default_det else None})
    return rows


def _subset(ds: EvalSet, splits: tuple[str, ...]) -> EvalSet:
    sub = EvalSet(ds.name, domain=ds.domain, info={"parent_index": []})
    for i, im in enumerate(ds.images):
        if im.split in splits:
            sub.images.append(im)
            sub.info["parent_index"].append(i)
    return sub


def _expand(table, ds: EvalSet, sub: EvalSet):
    """A table over ``sub``'s images spread back to ``ds``'s indices (other rows copied from
    the first image; they are never read: only val/test pairs are scored)."""
    idx = np.zeros(len(ds.images), np.int64)
    idx[np.asarray(sub.info["parent_index"])] = np.arange(len(sub.images))
    for name in ("vectors", "phash", "pdq", "bovw", "semantic", "graph", "class_counts",
                 "n_objects"):
        v = getattr(table, name)
        if v is not None:
            setattr(table, name, v[idx])
    table.features = [table.features[i] for i in idx]
    return table


def dump_json(obj, path: Path) -> None:
    path.write_text(json.dumps(obj, indent=1, default=str))
