"""`--judge-mode auto`: the cheapest judge form that ranks about as well as the best one.

Entry point: `choose_judge_mode(reports, fusion) -> JudgeChoice`. Each form (`one_pass`,
`shared_prefix`, `two_prompt`) is audited on the same queries; a form qualifies when its precision@1 under the
run's fusion is within `TOLERANCE` of the best form's, and the cheapest qualifying form (LLM
calls per query, then seconds) wins. One point is about one query in a hundred: less than the
noise of an audit of that size, so a form that costs twice as much must beat it by more.
"""

from __future__ import annotations

from pydantic import BaseModel

from gecko_factory.audit.report import AuditReport

FORMS = ("one_pass", "shared_prefix", "two_prompt")  # rc_only is not a choice: it is what a server without log-probs forces
TOLERANCE = 0.01
FALLBACK = "two_prompt"  # Gecko's form, when nothing was measured


class JudgeChoice(BaseModel):
    mode: str
    reason: str
    table: list[dict]  # per form: precision@1 under the fusion, calls and seconds per query


def _cost(report: AuditReport) -> tuple[float, float]:
    c = report.cost
    if c is None:  # every answer came from the cache: calls per query from the form itself
        n = report.identity.get("candidates", 0)
        return (2 * n if report.identity.get("judge_mode") == "two_prompt" else n), 0.0
    return c.calls_per_query, c.seconds_per_query


def choose_judge_mode(reports: dict[str, AuditReport], fusion: str) -> JudgeChoice:
    table = []
    for mode, report in reports.items():
        calls, seconds = _cost(report)
        table.append({"mode": mode, "p_at_1": report.rank(fusion).p_at_1, "n": report.covered,
                      "calls_per_query": calls, "seconds_per_query": seconds})
    if not table:
        return JudgeChoice(mode=FALLBACK, reason="no audit: Gecko's two-prompt form", table=[])
    best = max(t["p_at_1"] for t in table)
    ok = [t for t in table if t["p_at_1"] >= best - TOLERANCE - 1e-12]
    pick = min(ok, key=lambda t: (t["calls_per_query"], t["seconds_per_query"]))
    reason = (f"{pick['mode']}: precision@1 {pick['p_at_1']:.3f} under {fusion} (best "
              f"{best:.3f}, within {TOLERANCE:.2f} qualifies) at {pick['calls_per_query']:.1f} "
              "LLM calls per query, the cheapest that qualifies")
    return JudgeChoice(mode=pick["mode"], reason=reason, table=table)
