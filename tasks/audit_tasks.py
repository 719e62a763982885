"""Prefect tasks around the library's audit steps (gecko_factory.audit.run). Small in, small out.

The spec travels as a dict (AuditSpec dumped): Prefect validates and logs it, and it holds no
secret. The judge step is the only one that talks to the LLM, so it is the only one retried,
and only on transient failures (the same rule as the FRet shards). NO_CACHE throughout: the
judged records and the request cache are what make a rerun cheap, not Prefect's result cache.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from gecko_factory.audit.run import AuditSpec, judge_step, prepare, report_step
from gecko_factory.llm.settings import client_settings
from gecko_factory.llm.settings import LLMSettings
from tasks.fret_tasks import retry_if_transient

AUDIT_KEY = "judge-audit"


def judge_settings() -> LLMSettings:
    """The settings the audit judges with: every request names the judge (GECKO_LLM_JUDGE_MODEL,
    else the one model), and the embedded server, when it is the endpoint, loads that model alone
    (the writer has nothing to do in an audit)."""
    settings = client_settings()
    judge = settings.judge_model or settings.model
    update: dict = {"model": judge, "judge_model": None}
    if not settings.base_url:
        update["embedded_model"] = judge
    return settings.model_copy(update=update)


@task(name="audit-prepare", cache_policy=NO_CACHE, tags=["audit", "cpu"])
def audit_prepare_task(spec: dict) -> dict:
    prepared = prepare(AuditSpec.model_validate(spec))
    get_run_logger().info("audit corpus: %d documents (skipped %s), index %s", prepared.plan.corpus_count,
                          prepared.plan.corpus_skipped or "none", prepared.index.path)
    return {"documents": prepared.plan.corpus_count, "skipped": prepared.plan.corpus_skipped,
            "index": str(prepared.index.path)}


@task(name="audit-judge", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30],
      retry_condition_fn=retry_if_transient, tags=["audit", "llm"])
def audit_judge_task(spec: dict, base_url: str) -> dict:
    s = judge_step(AuditSpec.model_validate(spec), judge_settings(), base_url)
    get_run_logger().info("audit: %d queries judged now, %d reused, %d skipped, %d failed (%s)",
                          s.judged_now, s.reused, len(s.skipped), len(s.failed), s.records_path)
    if s.failed:  # the service failed on these: fail the task so a rerun redoes them
        raise RuntimeError(f"{len(s.failed)} queries could not be judged, e.g. "
                           f"{next(iter(s.failed.items()))}; rerun to redo only those")
    return {"identity": s.identity, "records": str(s.records_path), "judged_now": s.judged_now,
            "reused": s.reused}


@task(name="audit-report", cache_policy=NO_CACHE, tags=["audit"])
def audit_report_task(spec: dict, identity: dict) -> dict:
    report = report_step(AuditSpec.model_validate(spec), identity)
    create_markdown_artifact(markdown=report.to_markdown(), key=AUDIT_KEY,
                             description=f"judge audit: {report.dataset} ({report.split}), "
                                         f"{report.judged} queries")
    return report.model_dump(mode="json")
