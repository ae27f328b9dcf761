"""Results of a load test: the JSON document, the ratios, the table and
the plot. Pure functions over plain dicts (the JSON is the record), so they
are unit-tested without a network.

Document shape::

    {"scenarios": {NAME: {"shardnet": {FIGURE: value, ...},
                          "kernel": {...}, "ratio": {FIGURE: shardnet/kernel}}},
     "config": {...}}

``kernel`` and ``ratio`` appear with ``--against kernel``. A sweep over shard
counts names the scenarios ``NAME@Ns`` (the kernel's figures repeated in
each). Besides the figures, a system's dict holds counts (``failed``,
``corrupted``, ``lost``...) and details (``rss_bytes``) that get no ratio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# The figures that get a ratio, in table order, with their units.
FIGURES: dict[str, str] = {
    "mbytes_per_s_in": "MB/s",  # 10^6 bytes/s into the server
    "mbytes_per_s_out": "MB/s",  # 10^6 bytes/s out of the server
    "conn_per_s": "conn/s",
    "tps": "tx/s",
    "pps": "dgram/s",
    "p50_us": "us",
    "p99_us": "us",
    "rss_per_conn_bytes": "B",
    "cpu_ms_per_mb": "ms/MB",
    # the hostile scenarios: what the well-behaved client saw beside the attack
    "success_rate": "0-1",
    "flood_pps": "frames/s",
    "rss_max_bytes": "B",
    "rss_growth_bytes": "B",  # churn: the server's RSS at the end less at the start
    "fd_growth": "fds",
    "drain_s": "s",  # drain: from SIGTERM until the server exited
    "recovery_s_v4": "s",  # raflood: from the flood's end until IPv4 answers again
    "recovery_s_v6": "s",
    "restarts": "",
    # soak: a shard killed every --kill-every seconds under mixed load
    "kills": "",
    "restart_s_max": "s",  # from a kill until a new connection to that shard was echoed
    "reset_conns": "conns",  # the killed shards' connections, ended by a reset
    "reset_s_max": "s",  # from a kill until the last of its connections saw the reset
    "connections_lost": "conns",  # connections on surviving shards that broke
}
# Counts that make the run fail when not zero.
FAILURES = ("failed", "corrupted")
SYSTEMS = ("shardnet", "kernel")


def percentile(samples: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..100) of unsorted samples; NaN
    for none. Nearest rank keeps it a value that was measured."""
    if not samples:
        return math.nan
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not in 0..100")
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return float(ordered[rank - 1])


def ratios(shardnet: dict[str, Any], kernel: dict[str, Any]) -> dict[str, float]:
    """shardnet / kernel for every figure both measured (kernel not zero).
    As is: above 1 is better for rates, worse for latency, memory and CPU."""
    out = {}
    for name in FIGURES:
        a, b = shardnet.get(name), kernel.get(name)
        if isinstance(a, int | float) and isinstance(b, int | float) and b:
            out[name] = a / b
    return out


def scenario_key(scenario: str, shards: int, sweep: bool) -> str:
    return f"{scenario}@{shards}s" if sweep else scenario


def build(
    shardnet: dict[str, dict[str, Any]],
    kernel: dict[str, dict[str, Any]] | None,
    config: dict[str, Any],
) -> dict[str, Any]:
    """The document from shardnet's figures per scenario key and the
    kernel's per scenario name (keys ``NAME@Ns`` find ``NAME``)."""
    scenarios: dict[str, Any] = {}
    for key, figures in shardnet.items():
        entry: dict[str, Any] = {"shardnet": figures}
        base = key.split("@")[0]
        if kernel is not None and base in kernel:
            entry["kernel"] = kernel[base]
            entry["ratio"] = ratios(figures, kernel[base])
        scenarios[key] = entry
    return {"scenarios": scenarios, "config": config}


def failures(doc: dict[str, Any]) -> list[str]:
    """One line per scenario and system where something failed or came
    back corrupted; empty when the run was clean."""
    out = []
    for key, entry in doc["scenarios"].items():
        for system in SYSTEMS:
            figures = entry.get(system)
            if not figures:
                continue
            bad = {n: figures.get(n, 0) for n in FAILURES if figures.get(n, 0)}
            if bad:
                what = ", ".join(f"{v} {n}" for n, v in bad.items())
                error = f" ({figures['error']})" if figures.get("error") else ""
                out.append(f"{key} {system}: {what}{error}")
    return out


@dataclass(slots=True)
class Row:
    scenario: str
    figure: str
    shardnet: float | None
    kernel: float | None
    ratio: float | None


def rows(doc: dict[str, Any]) -> list[Row]:
    out = []
    for key, entry in doc["scenarios"].items():
        ours, theirs = entry.get("shardnet", {}), entry.get("kernel", {})
        for name in FIGURES:
            if name not in ours and name not in theirs:
                continue
            out.append(
                Row(key, name, ours.get(name), theirs.get(name), entry.get("ratio", {}).get(name))
            )
    return out


def _num(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(doc: dict[str, Any]) -> str:
    """The results as an aligned text table, one line per figure."""
    has_kernel = any("kernel" in e for e in doc["scenarios"].values())
    head = ["scenario", "figure", "unit", "shardnet"] + (["kernel", "ratio"] if has_kernel else [])
    lines = [head]
    for r in rows(doc):
        line = [r.scenario, r.figure, FIGURES[r.figure], _num(r.shardnet)]
        if has_kernel:
            line += [_num(r.kernel), "-" if r.ratio is None else f"{r.ratio:.3f}"]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = []
    for line in lines:
        cells = [
            c.ljust(w) if i < 3 else c.rjust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        ]
        text.append("  ".join(cells).rstrip())
    return "\n".join(text)


def plot(doc: dict[str, Any], path: str) -> None:
    """One panel per scenario, shardnet's and the kernel's figures side by
    side (log scale: rates and latencies differ by orders of magnitude).
    matplotlib is an optional extra: ImportError when it is missing."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    keys = [k for k, e in doc["scenarios"].items() if any(f in e["shardnet"] for f in FIGURES)]
    cols = min(3, max(1, len(keys)))
    nrows = math.ceil(len(keys) / cols) or 1
    fig, axes = plt.subplots(nrows, cols, figsize=(5 * cols, 3.6 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        entry = doc["scenarios"][key]
        names = [n for n in FIGURES if n in entry["shardnet"]]
        xs = range(len(names))
        shown: list[float] = []
        for i, system in enumerate(s for s in SYSTEMS if s in entry):
            values = [entry[system].get(n) or 0 for n in names]
            shown += [v for v in values if v > 0]
            ax.bar([x + i * 0.4 for x in xs], values, width=0.4, label=system)
        labels = [f"{n}\n({FIGURES[n]})" for n in names]
        ax.set_xticks([x + 0.2 for x in xs], labels, fontsize=8)
        ax.set_yscale("log")
        if shown:  # bars start well below the smallest, so every bar shows
            ax.set_ylim(bottom=min(shown) / 5)
        ax.set_title(key)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
