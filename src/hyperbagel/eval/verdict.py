"""Acceptance targets read off ``bench generate|edit`` reports: each target with what was measured and whether it
holds, so that a claim of "non-inferior", "beats the peers" or "15× end to end" is checked the same way every time.

The targets are issue 18's: the 6-step model (non-inferior to the teacher at −0.02, KID within 1.25× of its, better
than every training-free peer at the same forwards, 15× / 20× end to end) and the 1-step model (0.92× / 0.90× the
teacher's score on each bench seed, 60× end to end for text-to-image).
"""

from __future__ import annotations

from dataclasses import dataclass

from hyperbagel.eval.cpu_meter import disturbed
from hyperbagel.eval.paired import diff_cell


@dataclass(frozen=True)
class Targets:
    """What one row must reach on one suite; None leaves a target out."""

    ci_floor: float | None = None  # paired 95 % CI lower bound of (row − teacher) at least this
    kid_ratio: float | None = None  # KID at most this × the teacher's
    beat_peers: bool = False  # paired 95 % CI of (row − peer) above 0 and a lower KID, for every training-free peer
    score_ratio: float | None = None  # overall score at least this × the teacher's
    speedup: float | None = None  # end to end over the teacher, at least


SIX_STEP = {"generate": Targets(ci_floor=-0.02, kid_ratio=1.25, beat_peers=True, speedup=15.0),
            "edit": Targets(ci_floor=-0.02, kid_ratio=1.25, beat_peers=True, speedup=20.0)}
ONE_STEP = {"generate": Targets(score_ratio=0.92, speedup=60.0), "edit": Targets(score_ratio=0.90)}
TARGETS = {"six-step": SIX_STEP, "one-step": ONE_STEP}


@dataclass(frozen=True)
class Check:
    suite: str
    what: str
    measured: str
    target: str
    holds: bool


def _row(report: dict, name: str) -> dict:
    rows = {r["row"]: r for r in report["rows"]}
    if name not in rows:
        raise KeyError(f"{report['suite']} bench has no row {name!r}; rows are {sorted(rows)}")
    return rows[name]


def checks(report: dict, row: str, targets: Targets) -> list[Check]:
    """Every target of ``targets`` for ``row`` of one bench report (``bench.json``)."""
    suite, r, teacher = report["suite"], _row(report, row), _row(report, "teacher")
    if "seed" in report:
        suite += f", seed {report['seed']}"
    out = []
    if targets.ci_floor is not None:
        vs = r["vs_teacher"]
        out.append(Check(suite, "Δ vs teacher, 95 % CI lower bound",
                         diff_cell(vs),
                         f"≥ {targets.ci_floor:+.2f}", vs["ci95"][0] >= targets.ci_floor))
    if targets.kid_ratio is not None:  # KID is an unbiased estimate: near 0 it can be 0 or below, so no ratio
        kids = f"{1e3 * r['kid']:.1f} vs {1e3 * teacher['kid']:.1f}"
        out.append(Check(suite, "KID×10³ vs the teacher's", kids, f"≤ {targets.kid_ratio:.2f}× the teacher's",
                         r["kid"] <= targets.kid_ratio * max(teacher["kid"], 0.0)))
    if targets.beat_peers:
        peers = r.get("vs_peers")
        if not peers:
            out.append(Check(suite, "beats the training-free peers", "not compared (a peer row, or no peers run)",
                             "every peer", False))
        for name, vs in (peers or {}).items():
            peer_kid = _row(report, name)["kid"]
            out.append(Check(suite, f"vs {name}: Δ 95 % CI above 0, lower KID",
                             f"{diff_cell(vs)}, KID "
                             f"{1e3 * r['kid']:.1f} vs {1e3 * peer_kid:.1f}", "> 0, lower",
                             vs["ci95"][0] > 0 and r["kid"] < peer_kid))
    if targets.score_ratio is not None:
        scores = f"{r['overall']:.3f} vs {teacher['overall']:.3f}"
        out.append(Check(suite, "score vs the teacher's", scores, f"≥ {targets.score_ratio:.2f}× the teacher's",
                         r["overall"] >= targets.score_ratio * teacher["overall"]))
    if targets.speedup is not None:  # a ratio of wall times holds only when nothing else ran beside either row
        busy = disturbed([teacher, r])
        note = f"; timings disturbed: {', '.join(busy)}" if busy else ""
        out.append(Check(suite, "speed-up end to end",
                         f"{r['speedup']:.1f}× (sampling {r['sample_speedup']:.1f}×){note}",
                         f"≥ {targets.speedup:g}×", r["speedup"] >= targets.speedup and not busy))
    return out


def markdown(row: str, results: list[Check]) -> str:
    """A table of the checks and a last line saying how many hold."""
    lines = [f"| {row} | target | measured | holds |", "|---|---|---|---|"]
    lines += [f"| {c.suite}: {c.what} | {c.target} | {c.measured} | {'yes' if c.holds else '**no**'} |"
              for c in results]
    missed = sum(not c.holds for c in results)
    lines += ["", f"{len(results) - missed} of {len(results)} targets hold" + (f"; {missed} missed" if missed else "")]
    return "\n".join(lines)


def missing_suites(reports: list[dict]) -> list[str]:
    """The (task, seed) pairs a verdict lacks: every seed given needs both a generate and an edit bench."""
    seeds = {r.get("seed") for r in reports}
    have = {(r["task"], r.get("seed")) for r in reports}
    return [f"{task} (seed {seed})" for seed in sorted(seeds, key=str) for task in ("generate", "edit")
            if (task, seed) not in have]
