"""Latency-vs-load PNG for one or more ``grokd bench serve --json`` result files (one line per
file, so grokd and a peer overlay). matplotlib is an optional extra: ``pip install grokd[bench]``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

PANELS = (("ttft_ms", "TTFT (ms)"), ("tpot_ms", "TPOT (ms)"), ("e2e_ms", "end-to-end (ms)"),
          ("output_throughput", "output tok/s"))


def plot(runs: Sequence[tuple[str, dict]], out: str | Path) -> Path:
    """``runs``: (label, results-json) pairs; draws p50 solid and p99 dashed against the load."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit("--plot needs matplotlib: pip install 'grokd[bench]'") from exc
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6))
    xlabel = "load"
    for label, data in runs:
        levels = data["levels"]
        xs = [lv["load"] for lv in levels]
        xlabel = levels[0]["mode"] if levels else xlabel
        for ax, (key, title) in zip(axes, PANELS, strict=True):
            if key == "output_throughput":
                ax.plot(xs, [lv["summary"][key] for lv in levels], "o-", label=label)
            else:
                line = ax.plot(xs, [lv["summary"][key]["p50"] for lv in levels], "o-", label=f"{label} p50")
                ax.plot(xs, [lv["summary"][key]["p99"] for lv in levels], "x--",
                        color=line[0].get_color(), label=f"{label} p99")
            ax.set_title(title)
            ax.set_xlabel(xlabel)
            ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
