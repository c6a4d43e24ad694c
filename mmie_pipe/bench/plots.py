"""The bench's two plots (PNG, matplotlib's Agg backend, no display): F1 against shots, one line
per prompt configuration; F1 against cost per 1,000 posts (tokens per 1,000 posts when some cell's
model has no price)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

F1_VS_SHOTS = "f1_vs_shots.png"
F1_VS_COST = "f1_vs_cost.png"


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _label(row: dict[str, Any], skip: set[str]) -> str:
    keys = [k for k in row.get("_axes", []) if k not in skip]
    parts = [row["pipeline"]] + [f"{k}={row[k]}" for k in keys]
    return " ".join(str(p) for p in parts)


def write_plots(payload: dict[str, Any], axes: list[str], out_dir: Path) -> list[str]:
    """Returns the file names written (none without matplotlib or without scored cells)."""
    plt = _pyplot()
    rows = [dict(r, _axes=axes) for r in payload["cells"] if r.get("f1") is not None]
    if plt is None or not rows:
        return []
    written = []
    several_data = len({r["data"] for r in rows}) > 1
    if "shots" in axes:
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
        groups: dict[str, list[dict]] = {}
        for r in rows:
            label = _label(r, {"shots"}) + (f" [{r['data']}]" if several_data else "")
            groups.setdefault(label, []).append(r)
        for label, items in groups.items():
            items.sort(key=lambda r: r["shots"])
            ax.plot([r["shots"] for r in items], [100 * r["f1"] for r in items], marker="o", label=label)
        ax.set_xlabel("shots (few-shot examples per prompt)")
        ax.set_ylabel(f"{payload['task']} F1 (%)")
        ax.set_title(f"{payload['name']}: F1 against shots")
        ax.set_xticks(sorted({r["shots"] for r in rows}))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / F1_VS_SHOTS, metadata={"Software": None})
        plt.close(fig)
        written.append(F1_VS_SHOTS)
    priced = all(r.get("cost_per_1k_posts") is not None for r in rows)
    key = "cost_per_1k_posts" if priced else "tokens_per_1k_posts"
    fig, ax = plt.subplots(figsize=(7.2, 4.2), dpi=110)
    points: dict[tuple[float, float], list[str]] = {}  # cells that land on one point share a label
    for r in rows:
        x = (r.get(key) or 0) / (1 if priced else 1000)
        points.setdefault((x, 100 * r["f1"]), []).append(_label(r, set()) + (f" [{r['data']}]" if several_data else ""))
    for (x, y), labels in points.items():
        ax.scatter([x], [y], s=36)
        ax.annotate("\n".join(labels), (x, y), fontsize=7, xytext=(5, 3), textcoords="offset points")
    ax.margins(x=0.35, y=0.12)
    ax.xaxis.set_major_locator(plt.MaxNLocator(6))
    ax.set_xlabel(f"cost per 1,000 posts ({payload['currency']})" if priced
                  else "thousand tokens per 1,000 posts (no price for this model: see --prices)")
    ax.set_ylabel(f"{payload['task']} F1 (%)")
    ax.set_title(f"{payload['name']}: F1 against cost")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_dir / F1_VS_COST, metadata={"Software": None})
    plt.close(fig)
    written.append(F1_VS_COST)
    return written
