"""The audit flow: prepare (corpus + index) → LLM endpoint → judge → report (+ artifact).

`audit_flow` measures one judge form; `auto_judge_mode` audits each form on the same queries
and returns the cheapest that ranks within a point of the best (`--judge-mode auto`). Both judge
through the endpoint the LLM settings point at (OPENAI_BASE_URL / GECKO_LLM_MODEL /
GECKO_LLM_JUDGE_MODEL, or the embedded server), so the same command audits another model.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from gecko_factory.audit.auto import FALLBACK, FORMS, choose_judge_mode
from gecko_factory.audit.report import AuditReport
from gecko_factory.audit.run import AuditSpec, dataset_of, pending_queries, planned_identity
from gecko_factory.evaluate import DatasetUnavailable
from gecko_factory.options import RunOptions
from tasks.audit_tasks import audit_judge_task, audit_prepare_task, audit_report_task, judge_settings
from tasks.llm_endpoint import llm_endpoint


def audit_spec(beir: str | None, split: str, limit: int | None, out: str, candidates: int,
               judge_mode: str, fusion: str | None, fusions: list[str] | None, cache: bool) -> AuditSpec:
    """The FRet config of the run being audited comes from the FRet flow's one builder."""
    from flows.fret import fret_config

    # judge_settings names no separate judge: the audit's one model is the run's judge
    fret = fret_config(RunOptions(candidates=candidates, judge_mode=judge_mode, fusion=fusion),
                       judge_settings())
    return AuditSpec(beir=beir, split=split, limit=limit, out=out, fret=fret,
                     fusions=list(fusions or []), cache=cache)


@flow(name="audit", flow_run_name="audit-{judge_mode}-{limit}", log_prints=False)
def audit_flow(beir: str | None = None, split: str = "train", limit: int | None = 100,
               out: str = "runs/audit", candidates: int = 5, judge_mode: str = "two_prompt",
               fusion: str | None = None, fusions: list[str] | None = None,
               cache: bool = True) -> dict:
    """`fusion`: the run's fusion (default: the factory's); `fusions`: more to score."""
    spec = audit_spec(beir, split, limit, out, candidates, judge_mode, fusion, fusions, cache)
    dataset_of(spec)  # a missing labelled set fails here, with where it was looked for
    payload = spec.model_dump(mode="json")
    audit_prepare_task(payload)
    identity = planned_identity(spec)
    if pending_queries(spec, identity):
        with llm_endpoint(judge_settings()) as base_url:
            identity = audit_judge_task(payload, base_url)["identity"]
    else:  # every query has its record: the report needs no LLM (not even started)
        get_run_logger().info("audit: every selected query is judged already (%s)", out)
    report = audit_report_task(payload, identity)
    get_run_logger().info("audit written to %s/audit.json and audit.md", out)
    return report


@flow(name="auto-judge-mode", log_prints=False)
def auto_judge_mode(candidates: int, fusion: str | None = None, limit: int = 40,
                    out: str = "runs/audit", beir: str | None = None) -> dict:
    """Audit each judge form (cached records and answers are reused) and pick one."""
    logger = get_run_logger()
    reports: dict[str, AuditReport] = {}
    fusion_spec = ""  # the fusion the audits scored as the run's, from their reports
    for mode in FORMS:
        try:
            raw = audit_flow(beir=beir, limit=limit, out=out, candidates=candidates,
                             judge_mode=mode, fusion=fusion)
        except DatasetUnavailable as exc:
            logger.warning("judge-mode auto: no labelled set to audit on (%s): using %s", exc, FALLBACK)
            return {"mode": FALLBACK, "reason": f"no labelled set: {exc}", "table": []}
        report = AuditReport.model_validate(raw)
        if report.identity.get("judge_mode") != mode:  # the server gave no log-probs: rc_only
            return {"mode": report.identity["judge_mode"], "reason": "no prompt log-probs", "table": []}
        reports[mode] = report
        fusion_spec = report.default_fusion
    choice = choose_judge_mode(reports, fusion_spec)
    logger.info("judge-mode auto → %s", choice.reason)
    return choice.model_dump()
