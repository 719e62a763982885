"""deployments/: `deploy.sh` against a real Prefect server, then a refresh run by a real worker.

The refresh is started the way the schedule starts it (a flow run of the `fret-refresh`
deployment, picked up by a `cpu` process worker) against the scripted LLM server; it must write a
data-set version and trigger the `train` deployment, whose run waits for a `gpu` worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest


REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))
pytestmark = pytest.mark.timeout(420)


def wait_for(predicate, timeout: float, what: str, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(1)
    tail = log.read_text()[-4000:] if log and log.exists() else ""
    raise AssertionError(f"{what} not seen after {timeout:.0f} s\n{tail}")


@pytest.fixture(scope="module")
def server(prefect_server):
    """The session's Prefect server (tests/conftest.py), with the environment the CLI needs."""
    env = {**os.environ, "PREFECT_HOME": str(prefect_server["home"]),
           "PREFECT_API_URL": prefect_server["api"], "PREFECT_UI_API_URL": prefect_server["api"],
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_WORKER_QUERY_SECONDS": "2"}
    return {"api": prefect_server["api"], "env": env}


def deployments(api: str) -> dict[str, dict]:
    rows = httpx.post(f"{api}/deployments/filter", json={}, timeout=10).json()
    return {d["name"]: d for d in rows}


def flow_runs(api: str, deployment_id: str) -> list[dict]:
    body = {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}}
    return httpx.post(f"{api}/flow_runs/filter", json=body, timeout=10).json()


CHROMIUM = "/usr/bin/chromium"


def schedule_in_the_ui(api: str, deployment_id: str, tmp_path: Path) -> None:
    """The deployment page in headless Chromium shows the daily schedule (screenshot kept)."""
    if not Path(CHROMIUM).exists():
        return  # tests/flows/test_ui_browser.py says why it skips; the API checks above still ran
    from playwright.sync_api import expect, sync_playwright

    ui = api.removesuffix("/api")
    shot = tmp_path / "deployment.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{ui}/deployments/deployment/{deployment_id}")
        expect(page.get_by_text("fret-refresh").first).to_be_visible(timeout=60_000)
        expect(page.get_by_text("At 03:00 AM every day").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    keep = REPO / "runs" / "ui-check"
    keep.mkdir(parents=True, exist_ok=True)
    (keep / "deployment.png").write_bytes(shot.read_bytes())
    print(f"screenshot: {shot} (copy in {keep})")


def test_the_deployed_parameters_are_the_flows_own():
    """prefect.yaml's parameters pass the flow's validation (RunOptions forbids unknown keys), so
    a renamed option fails here and not at 03:00 on a worker; no server needed."""
    import yaml
    from prefect.exceptions import ParameterTypeError
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    refresh = next(d for d in spec["deployments"] if d["name"] == "fret-refresh")
    flow = load_flow_from_entrypoint(str(REPO / refresh["entrypoint"]))
    params = flow.validate_parameters(refresh["parameters"])
    assert params["options"].candidates == refresh["parameters"]["options"]["candidates"]
    with pytest.raises(ParameterTypeError, match="candidate"):
        flow.validate_parameters({"options": {"candidate": 3}})


def test_deploy_then_a_worker_runs_the_refresh(server, tmp_path, llm_env, wiki_sample):
    api, env = server["api"], server["env"]
    out = subprocess.run(["bash", "deployments/deploy.sh"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    deployed = deployments(api)
    assert set(deployed) == {"fret-refresh", "train"}
    refresh, train = deployed["fret-refresh"], deployed["train"]
    assert (refresh["work_pool_name"], train["work_pool_name"]) == ("cpu", "gpu")
    schedule = refresh["schedules"][0]
    assert schedule["active"] and schedule["schedule"]["cron"] == "0 3 * * *"

    schedule_in_the_ui(api, refresh["id"], tmp_path)

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:16]))
    root = tmp_path / "dataset"
    worker_env = {**env, "OPENAI_BASE_URL": llm_env.base_url, "GECKO_LLM_MODEL": "scripted",
                  "GECKO_FACTORY_DIR": str(REPO)}
    worker_log = tmp_path / "worker.log"
    worker = subprocess.Popen([PREFECT, "worker", "start", "--pool", "cpu", "--limit", "1"],
                              cwd=REPO, env=worker_env, stdout=worker_log.open("wb"),
                              stderr=subprocess.STDOUT)
    try:
        params = {"root": str(root), "train_params": {"max_steps": 2},
                  "options": {"corpus": str(corpus), "limit": None, "candidates": 4, "shard_size": 8}}
        run = subprocess.run([PREFECT, "deployment", "run", "fret-refresh/fret-refresh",
                              "--params", json.dumps(params)], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stdout + run.stderr

        def finished():
            runs = flow_runs(api, refresh["id"])
            return runs if runs and runs[0]["state_type"] in ("COMPLETED", "FAILED", "CRASHED") else None
        runs = wait_for(finished, 300, "the refresh run to finish", worker_log)
        assert runs[0]["state_type"] == "COMPLETED", worker_log.read_text()[-4000:]
    finally:
        worker.terminate()
        worker.wait(30)
    version = json.loads((root / "versions" / "v0001" / "version.json").read_text())
    assert version["new_seeds"] == 16 and version["examples"] == 16
    # The refresh triggered training on the GPU pool: one scheduled run, with this version.
    trains = flow_runs(api, train["id"])
    assert len(trains) == 1 and trains[0]["state_type"] == "SCHEDULED"
    assert trains[0]["parameters"]["run_dirs"] == [str((root / "versions" / "v0001").resolve())]
    assert trains[0]["idempotency_key"].startswith("train-after-")
