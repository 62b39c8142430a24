"""The evaluation report's content: tables in the paper's layout, plots, gallery, targets."""

from __future__ import annotations

import numpy as np

from dupstream.lab.evaluation.methods import OURS, VISUAL
from dupstream.lab.evaluation.plots import (
    pair_figure,
    reliability_plot,
    roc_plot,
    scalability_plot,
)
from dupstream.lab.evaluation.report import Doc, fmt, fmt_ci, fmt_p

PAPER = {  # Table 2 / 3 of the paper: F1 MNIST, mAP MNIST, F1 COCO, mAP COCO, AUC WID
    "pHash": (0.823, 0.801, 0.701, 0.673, 0.867),
    "SIFT + BoVW": (0.856, 0.832, 0.754, 0.729, 0.901),
    "Deep Siamese": (0.912, 0.897, 0.873, 0.859, 0.953),
    "DeepRank": (0.925, 0.913, 0.889, 0.876, 0.961),
    "DupNet": (0.931, 0.922, 0.902, 0.893, 0.968),
    "semantic-aware (paper)": (0.947, 0.939, 0.929, 0.921, 0.984),
}
PAPER_ABLATION = {"visual only": 0.891, "semantic only": 0.903, "combined without graph": 0.918,
                  "full": 0.929}


def _m(res, name):
    return next(m for m in res.methods if m.name == name)


def write_report(out, results, *, meta, shipped, user, swap, scalability, per_kind=None):
    doc = Doc()
    doc.h(1, "dupstream evaluation")
    doc.p(f"Command: `{meta['command']}`. Machine: {meta['machine']}. Embedder: "
          f"{meta['embedder']}; detector: {meta['detector']}; seed {meta['seed']}; bootstrap "
          f"{meta['resamples']} resamples; wall time {meta['elapsed_s'] / 60:.1f} min.")
    doc.p("Protocol: every data set is split 60/20/20 by source image (no source, so no pair, "
          "crosses splits). Per method: alpha (grid 0.1..0.9) and the score cut-off maximise F1 on "
          "validation; the calibrator (Platt vs isotonic, chosen by validation log-loss) is fitted "
          "on train; every number below is on the test split. Brackets: bootstrap 95 % CI. mAP: "
          "each test copy queries every other test image (relevant = copies of the same picture).")
    if results:
        _datasets(doc, results)
        _main_table(doc, results)
        _ablation(doc, results)
        _swap(doc, swap)
        for res in results:
            _detail(doc, out, res)
        _decision(doc, out, results, shipped)
        if per_kind:
            doc.h(2, "Recall per edit type, FPR per negative kind (test split)")
            for part in per_kind_section(per_kind, meta.get("before"), meta.get("before_path")):
                if isinstance(part, tuple):
                    doc.table(*part)
                else:
                    doc.p(part)
        _scene_evidence(doc, results)
        _targets(doc, results, shipped)
    if scalability:
        _scalability(doc, out, scalability)
    if user:
        _user(doc, user)
    if results:
        _gallery(doc, out, results)
    return doc.write(out, "dupstream evaluation")


def _rate_cell(r: dict | None, exact: bool = True) -> str:
    if not r or not r.get("n"):
        return ""
    cell = f"{r['rate']:.3f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]"
    if exact:
        cell += f" ({r['exact_ci'][0]:.2f}-{r['exact_ci'][1]:.2f})"
    return f"{cell} {r['k']}/{r['n']}"


def per_kind_section(per_kind: dict, before: dict | None = None,
                     before_path: str | None = None) -> list:
    """Paragraphs (str) and tables ((header, rows)) for the per-kind verdicts: recall per edit
    type and FPR per negative kind, each decision, and the shipped product before (a saved
    ``per_kind.json``) when given. Also the docs/RESULTS.md section."""
    out: list = [
        "Share of test pairs called a copy, per pair kind: recall for edit types, false-positive "
        "rate for negative kinds. `shipped` is the product's verdict (`DecisionPolicy.decide` "
        "with workers/assets calibration and cut-offs, the set's domain), `refitted` the same "
        "policy fitted on this run's train/validation splits, `SSCD alone` the visual "
        "cosine at its validation cut. Cells: rate [bootstrap 95 % CI] (exact Clopper-Pearson "
        "95 % CI) hits/pairs."]
    if before is not None:
        out.append(f"`before`: the shipped product's rate in {before_path or 'a saved run'}.")
    for name, table in per_kind.items():
        decisions = [d for d in next(iter(table.values())) if d not in ("label", "measure")]
        header = ["kind", "measure"] + (["shipped before"] if before else []) + decisions
        rows = []
        for kind, row in table.items():
            cells = [kind, row["measure"]]
            if before:
                cells.append(_rate_cell(before.get(name, {}).get(kind, {}).get("shipped"),
                                        exact=False))
            cells += [_rate_cell(row[d]) for d in decisions]
            rows.append(cells)
        out.append(f"**{name}**")
        out.append((header, rows))
    return out


def _scene_evidence(doc, results):
    rows = [[r.ds.name, kind, f"{c['unique']} / {c['n']}", f"{c['evidence']} / {c['n']}"]
            for r in results if r.learned is not None
            for kind, c in r.learned.get("same_scene_evidence", {}).items()]
    if not rows:
        return
    doc.h(2, "Negative pairs: unique, with `same_scene` evidence (test split)")
    doc.p("The shipped learned decision's verdict and `DecisionPolicy.same_scene` (the verdict's "
          "`evidence.same_scene`) on each negative test pair: it belongs on `same_scene` pairs "
          "(another photo of the scene, whole on one side at least), may be on `scene_part` "
          "pairs (two halves - of one photo, or one of each photo of a stereo pair - little or "
          "no content in common) and on no other kind.")
    doc.table(["set", "kind", "unique", "with same_scene evidence"], rows)


def _datasets(doc, results):
    doc.h(2, "Data sets (built from packaged real images)")
    rows = []
    for r in results:
        c = r.ds.counts()
        cells = [f"{c[s]['sources']} / {c[s]['images']} / {c[s]['pairs']} ({c[s]['positives']}+)"
                 for s in ("train", "val", "test")]
        kinds = {}
        for p in r.ds.pairs:
            kinds[p.kind] = kinds.get(p.kind, 0) + 1
        missing = r.ds.info.get("missing")
        note = ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        if missing:
            note += f"; missing sources: {', '.join(missing)}"
        rows.append([r.ds.name, *cells, r.n_queries, note])
    doc.table(["set", "train: sources / images / pairs (pos)", "val", "test", "mAP queries",
               "pair kinds"], rows)


def _main_table(doc, results):
    doc.h(2, "Table 2/3 layout: ours against the baselines (test split)")
    names = [m.name for m in results[0].methods]
    header = ["method"]
    for r in results:
        header += [f"F1 {r.ds.name}", f"mAP {r.ds.name}", f"AUC {r.ds.name}"]
    rows = []
    for n in names:
        row = [n]
        for r in results:
            m = _m(r, n)
            row += ([fmt_ci(m.f1, m.f1_ci), fmt_ci(m.map, m.map_ci), fmt_ci(m.auc, m.auc_ci)]
                    if m.available else ["n/a"] * 3)
        rows.append(row)
    doc.table(header, rows)
    notes = [f"{r.ds.name}, {m.name}: {m.note}" for r in results for m in r.methods if m.note]
    if notes:
        doc.p("Notes: " + "; ".join(notes) + ".")
    doc.p("The paper's claims (its own data sets, for reference): " + "; ".join(
        f"{k}: F1 MNIST {v[0]}, mAP {v[1]}, F1 COCO {v[2]}, mAP {v[3]}, AUC WID {v[4]}"
        for k, v in PAPER.items()) + ".")


def _ablation(doc, results):
    doc.h(2, "Table 4 layout: ablation (F1 on test, alpha chosen on validation)")
    rows = []
    for n in ("visual only (SSCD)", "semantic only", "combined without graph", OURS):
        row = [n]
        for r in results:
            m = _m(r, n)
            row.append(fmt_ci(m.f1, m.f1_ci) if m.available else "n/a")
            row.append(fmt(m.alpha, 1) if m.available and m.alpha is not None else "")
        key = n.replace(" (SSCD)", "").replace(" (ours)", "")
        row.append(PAPER_ABLATION.get(key, ""))
        rows.append(row)
    header = ["variant"]
    for r in results:
        header += [f"F1 {r.ds.name}", "alpha"]
    doc.table(header + ["paper (COCO-Dup)"], rows)


def _swap(doc, swap):
    doc.h(2, "Table 5 layout: detector swap (COCO-style; full model)")
    if not swap:
        doc.p("Not available yet: the feature extractor has no detector backends.")
        return
    rows = [[s["detector"], fmt(s.get("f1")), fmt(s.get("map")), fmt(s.get("auc")),
             fmt(s.get("alpha"), 1), fmt(s.get("objects_per_image"), 2),
             fmt(s.get("seconds"), 0) if s.get("seconds") else "", s.get("note", "")]
            for s in swap]
    doc.table(["detector", "F1", "mAP", "AUC", "alpha", "objects / image", "extra s", "note"],
              rows)


def _detail(doc, out, res):
    name = res.ds.name
    doc.h(2, f"{name}: every method (test split, {int((res.split == 'test').sum())} pairs)")
    rows = []
    for m in res.methods:
        if not m.available:
            rows.append([m.name, *(["n/a"] * 8), m.note])
            continue
        mc = m.mcnemar
        mc_s = f"b={mc['b']} c={mc['c']} p={fmt_p(mc['p_exact'])}" if mc else "-"
        rows.append([m.name, fmt(m.precision), fmt(m.recall), fmt_ci(m.f1, m.f1_ci),
                     fmt_ci(m.auc, m.auc_ci), fmt_ci(m.map, m.map_ci),
                     f"{fmt(m.ece)} ({m.calibration})",
                     fmt(m.alpha, 1) if m.alpha is not None else "", mc_s, m.note or ""])
    doc.table(["method", "P", "R", "F1 [95% CI]", "AUC", "mAP", "ECE (calibrator)", "alpha",
               "McNemar ours vs it (b: only ours right, c: only it right)", "note"], rows)
    curves = [(m.name, m.roc[0], m.roc[1], m.auc) for m in res.methods if m.available]
    doc.img(roc_plot(f"ROC, {name} (test)", curves, out / f"roc_{name}.png").name, f"ROC {name}")
    rel = [(m.name, m.reliability, m.ece) for m in res.methods
           if m.available and m.name in (OURS, VISUAL, "pHash")]
    doc.img(reliability_plot(f"reliability, {name} (test)", rel,
                             out / f"reliability_{name}.png").name, f"reliability {name}")
    t = res.timings_s
    doc.p(f"Time: model features {t.get('model', 0):.0f} s, pHash {t.get('phash', 0):.1f} s, "
          f"SIFT+BoVW {t.get('sift_bovw', 0):.0f} s, total {t.get('total', 0):.0f} s.")


def _decision(doc, out, results, shipped):
    doc.h(2, "Decisions: calibration, cut-offs, adaptive thresholds")
    if shipped:
        cal, model = shipped["calibrator"], shipped["model"]
        doc.p(f"Fitted this run ({cal.meta.get('data')}): "
              f"calibrator `{cal.method}` (validation log-loss {cal.meta.get('val_log_loss')}), "
              f"cut-offs on P(copy): default balanced {fmt(model.default.balanced)}, precision "
              f"{fmt(model.default.precision)}, recall {fmt(model.default.recall)}; per domain "
              + ", ".join(f"{d}: {fmt(c.balanced)}" for d, c in model.domains.items())
              + f"; difficulty offsets {model.default.difficulty}. Written to calibration.json "
              "and decision.json here" + (" and shipped to workers/assets/." if shipped["shipped"]
                                          else " (add --ship to install them in workers/assets)."))
        rows = []
        for name, d in shipped["per_set"].items():
            for how, e in d.items():
                v = e["verdicts"]
                rows.append([name, how, fmt(e["precision"]), fmt(e["recall"]), fmt(e["f1"]),
                             fmt(e["ece"]), fmt(e["review"], 2),
                             f"{v['duplicate']} / {v['near_duplicate']} / {v['unique']}"])
        doc.p("The production decision (`DecisionPolicy.decide` on the production fused score) "
              "with these artefacts, on each test split: with the data set's domain cut-off, the "
              "default cut-off, and the plain P >= 0.5 rule.")
        doc.table(["set", "cut-off", "P", "R", "F1", "ECE", "review share",
                   "duplicate / near_duplicate / unique"], rows)
        rel = [(f"{n} (shipped)", d["domain"]["reliability"], d["domain"]["ece"])
               for n, d in shipped["per_set"].items()]
        doc.img(reliability_plot("reliability of the shipped calibration (test)", rel,
                                 out / "reliability_shipped.png").name, "shipped reliability")
    rows = []
    for r in results:
        a = r.adaptive
        for how in ("balanced", "balanced + difficulty", "precision-preferring",
                    "recall-preferring"):
            e = a[how]
            rows.append([r.ds.name, how, fmt(e["cut"]), fmt(e["precision"]), fmt(e["recall"]),
                         fmt(e["f1"]), fmt(e["review"], 2)])
    doc.p("Ours with cut-offs on its calibrated P fitted on validation: fixed (max F1), with the "
          "difficulty offsets (objects in the query: none / 1-3 / 4+; visual and semantic "
          "evidence agree or not), and the precision- / recall-preferring cut-offs (validation "
          "precision / recall >= 0.99). Review share: test pairs within 0.15 of the cut-off.")
    doc.table(["set", "cut-off", "median cut", "P", "R", "F1", "review share"], rows)


def _targets(doc, results, shipped):
    doc.h(2, "Targets")
    by = {r.ds.name: r for r in results}
    rows = []

    def add(target, value, ok):
        rows.append([target, value, "met" if ok else "missed"])

    if "mnist" in by:
        o = _m(by["mnist"], OURS)
        add("MNIST F1 >= 0.97", fmt(o.f1), o.f1 >= 0.97)
        add("MNIST mAP >= 0.96", fmt(o.map), o.map >= 0.96)
    if "coco" in by:
        o = _m(by["coco"], OURS)
        add("COCO-style F1 >= 0.95", fmt(o.f1), o.f1 >= 0.95)
    for r in results:
        o, v, ph = _m(r, OURS), _m(r, VISUAL), _m(r, "pHash")
        add(f"{r.ds.name}: full >= visual only + 0.02 F1", f"{o.f1 - v.f1:+.3f}",
            o.f1 - v.f1 >= 0.02)
        add(f"{r.ds.name}: full >= pHash + 0.15 F1", f"{o.f1 - ph.f1:+.3f}", o.f1 - ph.f1 >= 0.15)
        add(f"{r.ds.name}: ECE (ours, own calibrator) <= 0.03", fmt(o.ece), o.ece <= 0.03)
        if shipped:
            e = shipped["per_set"][r.ds.name]["domain"]["ece"]
            add(f"{r.ds.name}: ECE (shipped calibration) <= 0.03", fmt(e), e <= 0.03)
    doc.table(["target", "measured", ""], rows)


def _scalability(doc, out, rows):
    doc.h(2, "Scalability: `dupstream scan` over N COCO-style images (own process each)")
    doc.table(["images", "wall s", "ms / image", "peak RSS MiB", "linear fit"],
              [[r["images"], fmt(r["wall_s"], 1), fmt(r["per_image_ms"], 0),
                fmt(r["peak_rss_mib"], 0), r.get("fit", "")] for r in rows])
    doc.img(scalability_plot(rows, out / "scalability.png").name, "scalability")


def _user(doc, user):
    doc.h(2, f"Your labelled pairs ({user['ds'].info['csv']})")
    if user["ds"].info["skipped"]:
        doc.p("Skipped: " + "; ".join(user["ds"].info["skipped"]))
    if not user["pairs"]:
        doc.p("No readable pairs.")
        return
    s = user["shipped"]
    doc.p(f"Shipped policy: P {fmt(s['precision'])}, R {fmt(s['recall'])}, F1 {fmt(s['f1'])}, "
          f"ECE {fmt(s['ece'])}, AUC {fmt(s['auc'])}.")
    doc.table(["method", "AUC", "F1 at its best cut on these pairs (optimistic)", "note"],
              [[r["method"], fmt(r.get("auc")), fmt(r.get("oracle_f1")), r.get("note", "")]
               for r in user["rows"]])
    doc.table(["a", "b", "label", "P(copy)", "verdict", "review", "S"],
              [[p["a"], p["b"], p["label"], fmt(p["p_copy"]), p["verdict"], p["review"],
                fmt(p["fused"])] for p in user["pairs"]])


def _gallery(doc, out, results, k: int = 4):
    doc.h(2, "Gallery: worst false positives and false negatives of ours (test)")
    gal = out / "gallery"
    gal.mkdir(exist_ok=True)
    for r in results:
        o = _m(r, OURS)
        te = np.nonzero(r.split == "test")[0]
        y = r.label[te]
        p = o.prob
        for what, mask, order in (("false positive", (y == 0) & o.pred, -p),
                                  ("false negative", (y == 1) & ~o.pred, p)):
            idx = [i for i in np.argsort(order) if mask[i]][:k]
            if not idx:
                doc.p(f"{r.ds.name}: no {what}s.")
                continue
            for n, i in enumerate(idx):
                pair = r.ds.pairs[te[i]]
                a, b = r.ds.images[pair.a], r.ds.images[pair.b]
                cap = (f"{r.ds.name} {what}: {pair.kind}; P(copy)={p[i]:.2f}, "
                       f"Sv={r.cols['visual'][te[i]]:.2f}; {a.cluster} / {b.note}")
                path = gal / f"{r.ds.name}_{what.replace(' ', '_')}_{n}.png"
                pair_figure(a.rgb, b.rgb, cap, path)
                doc.img(f"gallery/{path.name}", cap)


def results_section(per_kind: dict, before: dict | None = None, *, title: str =
                    "Recall per edit type, FPR per negative kind", level: int = 2,
                    before_path: str | None = None) -> str:
    """The docs/RESULTS.md section (Markdown) from a run's ``per_kind.json`` and, for the
    before/after view, an earlier run's. ``python -m dupstream.lab.evaluation.document
    RUN/per_kind.json [BEFORE/per_kind.json]`` prints it."""
    lines = ["#" * level + " " + title, ""]
    for part in per_kind_section(per_kind, before, before_path):
        if isinstance(part, tuple):
            header, rows = part
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        else:
            lines.append(part)
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    from dupstream.lab.evaluation.perkind import load

    if len(sys.argv) < 2:
        print("usage: python -m dupstream.lab.evaluation.document RUN/per_kind.json "
              "[BEFORE/per_kind.json]", file=sys.stderr)
        raise SystemExit(2)
    now = load(sys.argv[1])
    if now is None:
        print(f"no such file: {sys.argv[1]}", file=sys.stderr)
        raise SystemExit(2)
    prev = sys.argv[2] if len(sys.argv) > 2 else None
    print(results_section(now, load(prev), before_path=prev))
