import json

from gecko_factory.audit.registry import audit_for_run, register


def _report(mode: str, prompt: str, judged: int) -> str:
    return json.dumps({"judged": judged, "identity": {
        "llm_model": "judge-1.5b", "judge_mode": mode, "judge_prompt": prompt, "candidates": 5}})


def test_a_run_finds_the_audit_of_its_own_judge_form_and_prompts(tmp_path, monkeypatch):
    """The judge's prompt version is that of every template its form reads: a shared_prefix run
    finds the audit of judge_v1 + judge_shared_v1, never one of the same model's other forms, and
    an edit to either template (another version) finds none."""
    monkeypatch.setenv("GECKO_HOME", str(tmp_path))
    register("two", _report("two_prompt", "judge_v1@a", 100), "two-prompt audit")
    register("shared", _report("shared_prefix", "judge_v1@a+judge_shared_v1@b", 40), "shared audit")

    def manifest(mode: str, shared_version: str = "judge_shared_v1@b") -> dict:
        versions = {"synthesize_v1": "synthesize_v1@s", "judge_v1": "judge_v1@a"}
        if mode == "shared_prefix":
            versions["judge_shared_v1"] = shared_version
        return {"judge_mode": [mode], "config": {"llm_model": "judge-1.5b", "candidates": 5,
                                                 "prompt_versions": versions}}

    assert audit_for_run(manifest("two_prompt"))[1] == "two-prompt audit"
    assert audit_for_run(manifest("shared_prefix"))[1] == "shared audit"
    assert audit_for_run(manifest("shared_prefix", "judge_shared_v1@edited")) is None
    assert audit_for_run(manifest("one_pass")) is None
