"""Plots people would rather look at than read. Matplotlib, headless."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def confusion_matrix_plot(confusion: torch.Tensor, classes: list[str], out: Path) -> Path:
    """Row-normalised confusion matrix (true class per row) with raw counts in the cells."""
    counts = confusion.cpu().float()
    rates = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, int(counts[i, j]), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    ax.set_title("Confusion matrix (test)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _save(fig, out: Path) -> Path:
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def fairness_plot(report: dict, out: Path) -> Path:
    """The metric per measurable group with its 95% bootstrap interval."""
    rows = [r for r in report["groups"] if r["value"] is not None]
    fig, ax = plt.subplots(figsize=(max(4.8, 1.2 * len(rows) + 2), 3.6))
    values = [r["value"] for r in rows]
    errors = [[r["value"] - r["ci"][0] for r in rows], [r["ci"][1] - r["value"] for r in rows]]
    ax.bar([f"{r['group']}\n(n={r['n']})" for r in rows], values, yerr=errors, capsize=6, color="#4c72b0", label="group (95% CI)")
    if report.get("overall") is not None:
        ax.axhline(report["overall"], color="black", linestyle="--", label=f"all test images {report['overall']:.3f}")
    ax.set_ylabel(f"test {report['metric']}")
    ax.set_ylim(0, 1.15)
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Per group, 95% bootstrap CI", fontsize=10)
    return _save(fig, out)


def corruption_plot(report: dict, out: Path) -> Path:
    """Metric vs severity, one line per corruption, the clean metric dashed."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name in dict.fromkeys(r["corruption"] for r in report["rows"]):
        rows = [r for r in report["rows"] if r["corruption"] == name]
        ax.plot([r["severity"] for r in rows], [r["value"] for r in rows], marker="o", label=name)
    # the clean score of the same subsample the corruptions are measured on (not the whole test split)
    ax.axhline(report["clean"], color="black", linestyle="--", label=f"clean, same images {report['clean']:.3f}")
    ax.set_xticks(sorted({r["severity"] for r in report["rows"]}))  # severities are levels 1..5
    ax.set_xlabel("severity level, 1 mild to 5 strong (values: model card)")
    ax.set_ylabel(f"{report['metric']} on the robustness subsample")
    ax.set_title("Common corruptions", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, out)


def adversarial_plot(report: dict, out: Path) -> Path:
    """Metric vs L-inf eps for each attack."""
    fig, ax = plt.subplots(figsize=(4.5, 3.4))
    for name, curve in report["curves"].items():
        eps = sorted(curve)
        ax.plot(eps, [curve[e] for e in eps], marker="o", label=name.upper())
    ax.set_xlabel("eps (L-inf, [0, 1] pixels)")
    ax.set_ylabel(f"test {report['metric']} (robustness subsample)")
    ax.set_title("Adversarial robustness", fontsize=10)
    ax.legend()
    return _save(fig, out)
