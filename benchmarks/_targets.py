"""The targets of issues 13 and 12, and the summary table the runner prints at the end of a run.

A target names one figure (``name@mode``) and a bound, or a ratio to a peer's figure of the
same name from the same run, or a shape (the roots@http curve rises until it saturates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# {"name@mode": value} of this run; peers: {name: {peer tag: value}}
Figures = dict[str, float]
Peers = dict[str, dict[str, float]]

# A point of the concurrency curve may fall this much below the best point before it (noise
# on a loaded machine) and still count as "saturated, not falling".
CURVE_SLACK = 0.9


@dataclass(frozen=True)
class Target:
    """``figure`` (``name@mode``) compared with ``bound``: ``>=`` or ``<=``; with ``peer``,
    the bound applies to the ratio ours/peer (higher is better) or peer/ours (lower)."""

    label: str
    figure: str
    op: str
    bound: float
    unit: str
    peer: str | None = None

    def measure(self, figures: Figures, peers: Peers) -> float | None:
        """The measured value this target is checked against, or None if not measured."""
        ours = figures.get(self.figure)
        if ours is None:
            return None
        if self.peer is None:
            return ours
        theirs = peers.get(self.figure.split("@")[0], {}).get(self.peer)
        if theirs is None or theirs <= 0 or ours <= 0:
            return None
        return ours / theirs if self.op == ">=" else theirs / ours

    def met(self, value: float) -> bool:
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def gap(self, value: float) -> str:
        """How far from the bound: the factor the figure must still improve by."""
        if value <= 0:
            return "no figure"
        factor = self.bound / value if self.op == ">=" else value / self.bound
        return f"{factor:.2f}x off"


TARGETS = (
    Target("client CPU per POST / round trip, trivial server", "rtt.raw@http", "<=", 200, "us"),
    Target("client CPU per POST / round trip, dev server", "rtt.dev@http", "<=", 200, "us"),
    Target("roots over HTTP vs the official SDK, same dev server", "roots@http", ">=", 2,
           "x", peer="resonate-sdk.http"),
    Target("seq_steps over HTTP (dev server)", "seq_steps@http", ">=", 1500, "steps/s"),
    Target("seq_steps, full preload: per-step cost, largest N / smallest N",
           "seq_steps_full.cost_growth@http", "<=", 1.5, "x"),
    Target("seq_steps, full preload: bytes per step, largest N / smallest N",
           "seq_steps_full.bytes_growth@http", "<=", 1.5, "x"),
    Target("roots embedded memory", "roots@memory", ">=", 20_000, "roots/s"),
    Target("roots embedded memory vs the official SDK's local mode", "roots@memory", ">=", 4,
           "x", peer="resonate-sdk.local"),
    Target("fanout embedded memory", "fanout@memory", ">=", 40_000, "children/s"),
    Target("replay cost per cached call (seq_rpc slope)", "seq_rpc.slope@memory", "<=", 0.5,
           "us/N"),
    Target("RSS per suspended workflow (10,000)", "memory.suspended_each@memory", "<=", 4, "KB"),
    Target("SQLite seq_steps", "seq_steps@sqlite", ">=", 8000, "steps/s"),
    # issue 12: PostgreSQL, DBOS on the same server as the peer
    Target("PostgreSQL seq_steps, one workflow", "seq_steps@postgres", ">=", 1500, "steps/s"),
    Target("PostgreSQL seq_steps vs DBOS on the same PostgreSQL", "seq_steps@postgres", ">=",
           2, "x", peer="dbos.postgres"),
    Target("PostgreSQL roots vs DBOS on the same PostgreSQL", "roots@postgres", ">=", 2, "x",
           peer="dbos.postgres"),
)


def curve(figures: Figures, mode: str = "http") -> list[tuple[int, float]]:
    """The points ``(in flight, roots/s)`` of the ``roots_inflight.K`` figures, by K."""
    prefix, suffix = "roots_inflight.", f"@{mode}"
    points = [(int(key[len(prefix):-len(suffix)]), value) for key, value in figures.items()
              if key.startswith(prefix) and key.endswith(suffix)]
    return sorted(points)


def curve_rises(points: list[tuple[int, float]]) -> bool:
    """Rises until it saturates: the best point beats the first, and no point falls below
    ``CURVE_SLACK`` of the best point before it."""
    if len(points) < 2:
        return False
    best = points[0][1]
    for _, value in points[1:]:
        if value < CURVE_SLACK * best:
            return False
        best = max(best, value)
    return best > points[0][1]


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def summary(figures: Figures, peers: Peers) -> list[str]:
    """The final table (markdown): target, figure, met or the gap, one row per target."""
    rows = ["| target | figure | bound | measured | met |", "|---|---|---|---|---|"]
    for t in TARGETS:
        value = t.measure(figures, peers)
        what = t.figure + (f" / {t.peer}" if t.peer else "")
        bound = f"{t.op} {_fmt(t.bound)} {t.unit}"
        if value is None:
            rows.append(f"| {t.label} | {what} | {bound} | not measured | - |")
            continue
        met = "yes" if t.met(value) else f"no ({t.gap(value)})"
        rows.append(f"| {t.label} | {what} | {bound} | {_fmt(value)} {t.unit} | {met} |")
    points = curve(figures)
    if points:
        shape = ", ".join(f"{k}: {_fmt(v)}" for k, v in points)
        met = "yes" if curve_rises(points) else "no"
        rows.append(f"| throughput as requests in flight rise (roots/s by in flight) | "
                    f"roots_inflight.K@http | rises until saturated | {shape} | {met} |")
    else:
        rows.append("| throughput as requests in flight rise | roots_inflight.K@http | "
                    "rises until saturated | not measured | - |")
    return rows
