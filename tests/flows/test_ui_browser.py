"""The Prefect UI shows our artifacts: a real server, a real FRet run, headless Chromium.

A `prefect server start` of its own (own PREFECT_HOME, a free port, PREFECT_UI_API_URL set, or
the UI cannot find its API), the `gecko-factory run` CLI against it and the scripted LLM server,
then Playwright on Debian's /usr/bin/chromium opens the flow run's Artifacts tab and both
artifact pages, and checks the numbers against the run's stats.json and manifest.json, and
that the card shows the run's plots (inline PNGs, decoded by the browser).
Screenshots: printed, and copied to runs/ui-check/ (gitignored) for a person to look at.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tasks.artifacts import CARD_KEY, PROGRESS_KEY, SHARDS_KEY

CHROMIUM = "/usr/bin/chromium"
COPY_TO = Path(__file__).resolve().parents[2] / "runs" / "ui-check"

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"no {CHROMIUM}: .ci/run installs Debian's chromium when run as root"),
    pytest.mark.timeout(300),
]


@pytest.fixture(scope="module")
def ui_run(tmp_path_factory, prefect_server, scripted_server, wiki_sample):
    """`gecko-factory run` in a subprocess whose PREFECT_API_URL is the server above."""
    tmp = tmp_path_factory.mktemp("ui-run")
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in wiki_sample[:12]))
    run_dir = tmp / "fret-ui"
    env = {**os.environ, "PREFECT_API_URL": prefect_server["api"], "PREFECT_HOME": str(prefect_server["home"]),
           "OPENAI_BASE_URL": scripted_server.base_url, "GECKO_LLM_MODEL": "scripted"}
    result = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--corpus", str(corpus),
                             "--out", str(run_dir), "--candidates", "4", "--shard-size", "4"],
                            env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # the server is shared with other tests: this run by its name
    runs = httpx.post(f"{prefect_server['api']}/flow_runs/filter", timeout=10, json={
        "flow_runs": {"name": {"any_": [f"fret-{run_dir}"]}}}).json()
    assert len(runs) == 1 and runs[0]["state_type"] == "COMPLETED", runs
    flow_run_id = runs[0]["id"]
    found = httpx.post(f"{prefect_server['api']}/artifacts/filter", timeout=10,
                       json={"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}}).json()
    return run_dir, flow_run_id, {a["key"]: a for a in found}


def _screenshot(page, tmp: Path, name: str) -> Path:
    path = tmp / name
    page.screenshot(path=str(path), full_page=True)
    COPY_TO.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, COPY_TO / name)
    print(f"screenshot: {path} (copy: {COPY_TO / name})")
    return path


def test_flow_run_page_shows_the_shard_table_and_the_card(ui_run, prefect_server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    run_dir, flow_run_id, artifacts = ui_run
    assert {PROGRESS_KEY, SHARDS_KEY, CARD_KEY} <= set(artifacts)
    stats = json.loads((run_dir / "stats.json").read_text())["shards"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    ui = prefect_server["ui"]
    with sync_playwright() as pw:
        # root in a container: no user namespaces for the sandbox, and /dev/shm may be tiny
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1800, "height": 1000})
        try:
            page.goto(f"{ui}/runs/flow-run/{flow_run_id}")
            page.locator("li.p-tab", has_text="Artifacts").click()  # the run page's tabs are <li>s
            for key in (PROGRESS_KEY, SHARDS_KEY, CARD_KEY):  # one card per artifact on the tab
                expect(page.locator(".artifact-card", has_text=key).first).to_be_visible(timeout=30_000)
            progress = page.locator(".artifact-card", has_text=PROGRESS_KEY)
            expect(progress).to_contain_text("3 of 3 shards done")
            expect(progress).to_contain_text("12 of 12 seeds")  # seed level
            assert "Something went wrong" not in page.content()
            _screenshot(page, tmp_path, "flow-run.png")

            page.goto(f"{ui}/artifacts/artifact/{artifacts[SHARDS_KEY]['id']}")
            table = page.locator("table").first
            expect(table).to_be_visible(timeout=30_000)
            for s in stats:  # each shard's row, with the figures stats.json recorded
                row = table.locator("tr", has_text=s["file"].removesuffix(".parquet"))
                expect(row).to_have_count(1)
                cells = [c.strip() for c in row.locator("td").all_inner_texts()]
                for value in (s["rows"], s["usage"]["calls"], s["usage"]["prompt_tokens"],
                              s["usage"]["cache_hits"], s["seconds"]):
                    assert str(value) in cells, (value, cells)
            _screenshot(page, tmp_path, "shard-table.png")

            page.goto(f"{ui}/artifacts/artifact/{artifacts[CARD_KEY]['id']}")
            rate = f"{manifest['counts']['relabel_rate']:.1%}"
            expect(page.get_by_text("relabel rate (positive ≠ seed)")).to_be_visible(timeout=30_000)
            expect(page.get_by_text(f"{rate} ({manifest['counts']['relabelled']} of 12)")).to_be_visible()
            expect(page.get_by_text("12 of 12 seeds")).to_be_visible()
            # the plots: inline PNGs the UI's markdown renders (decoded, with their real size),
            # the same bytes as the run folder's plots/*.png
            images = page.locator("img[src^='data:image/png;base64,']")
            expect(images).to_have_count(2, timeout=30_000)
            for i, name in enumerate(("scores", "shards")):
                img = images.nth(i)
                img.scroll_into_view_if_needed()
                expect(img).to_be_visible()
                page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=img.element_handle())
                assert img.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [1000, 320]
                src = img.get_attribute("src")
                assert base64.b64decode(src.split(",", 1)[1]) == (run_dir / "plots" / f"{name}.png").read_bytes()
            _screenshot(page, tmp_path, "data-set-card.png")
            images.first.screenshot(path=str(tmp_path / "plot-in-ui.png"))
            shutil.copy(tmp_path / "plot-in-ui.png", COPY_TO / "plot-in-ui.png")
        finally:
            browser.close()
