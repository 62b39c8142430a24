"""Figures (matplotlib, Agg): ROC curves, reliability diagrams, scalability, the gallery."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def roc_plot(title: str, curves: list[tuple[str, np.ndarray, np.ndarray, float]],
             path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    for name, fpr, tpr, auc in curves:
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})", lw=1.5)
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reliability_plot(title: str, curves: list[tuple[str, dict, float]], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1, label="perfectly calibrated")
    for name, rel, ece in curves:
        m = rel["count"] > 0
        ax.plot(rel["mean_p"][m], rel["freq"][m], marker="o", label=f"{name} (ECE {ece:.3f})")
    ax.set(xlabel="predicted P(copy)", ylabel="observed share of copies", title=title,
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scalability_plot(rows: list[dict], path: Path) -> Path:
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.5))
    n = [r["images"] for r in rows]
    a1.plot(n, [r["wall_s"] for r in rows], marker="o")
    a1.set(xlabel="images", ylabel="wall time (s)", title="time vs data-set size")
    a2.plot(n, [r["peak_rss_mib"] for r in rows], marker="o", c="C1")
    a2.set(xlabel="images", ylabel="peak RSS (MiB)", title="memory vs data-set size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def pair_figure(a: np.ndarray, b: np.ndarray, caption: str, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(5, 2.6))
    for ax, im, t in zip(axes, (a, b), ("reference", "query"), strict=True):
        ax.imshow(im, cmap="gray" if im.ndim == 2 else None)
        ax.set_title(t, fontsize=8)
        ax.axis("off")
    fig.suptitle(caption, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
