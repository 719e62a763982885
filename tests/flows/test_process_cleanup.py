"""A killed run leaves no process behind, and Prefect's server start waits long enough on a busy
machine (issue 11).

Real processes throughout: the `gecko-factory` console script with Prefect's own ephemeral API
server (PREFECT_API_URL unset), a Dask LocalCluster, the scripted LLM server. The process tree is
read from /proc here, independently of gecko_factory.orphan_reaper, which is what is under test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gecko_factory.testing.launch import ScriptedServer

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("gecko-factory")
SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

needs_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc only")


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[1]), int(fields[19])


def _tree(root: int) -> dict[int, int]:
    """{pid: start time} of every live descendant of `root`, from one pass over all of /proc."""
    by_parent: dict[int, list[tuple[int, int]]] = {}
    for p in Path("/proc").iterdir():
        if p.name.isdigit() and (s := _stat(int(p.name))) and s[0] != "Z":
            by_parent.setdefault(s[1], []).append((int(p.name), s[2]))
    found, todo = {}, [root]
    while todo:
        for pid, start in by_parent.get(todo.pop(), []):
            found[pid] = start
            todo.append(pid)
    return found


def _alive(procs: dict[int, int]) -> dict[int, int]:
    """Those that are still the same process (same pid and start time) and not a zombie."""
    return {p: t for p, t in procs.items() if (s := _stat(p)) and s[0] != "Z" and s[2] == t}


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"


def _rss_kb(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KB
    except OSError:
        return 0


def _cpu_and_age_s(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) a process used, and how long it has run."""
    raw = Path(f"/proc/{pid}/stat").read_bytes()
    fields = raw[raw.rindex(b")") + 2:].split()
    tick = os.sysconf("SC_CLK_TCK")
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return (int(fields[11]) + int(fields[12])) / tick, uptime - int(fields[19]) / tick


def _cli_env(tmp_path: Path, llm: ScriptedServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}  # the ephemeral server
    # own PREFECT_HOME: the ephemeral server's database is this test's alone
    return {**env, "OPENAI_BASE_URL": llm.base_url, "GECKO_LLM_MODEL": "scripted",
            "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def _mid_run(cli: subprocess.Popen, run_dir: Path, expect: list[str], shards_done: int,
             timeout_s: float) -> dict[int, int]:
    """Wait until `shards_done` shards are committed and each of `expect` is in some descendant's
    command line."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert cli.poll() is None, f"the CLI ended early ({cli.returncode})"
        tree = _tree(cli.pid)
        cmds = [_cmd(p) for p in tree]
        done = len(list(run_dir.glob("shards/part-*.done.json")))
        if (run_dir / "plan.json").exists() and done >= shards_done and all(
                any(e in c for c in cmds) for e in expect):
            return tree
        time.sleep(0.2)
    raise AssertionError(f"not mid-run after {timeout_s}s: {cmds}")


@needs_proc
@pytest.mark.prefect_server
@pytest.mark.timeout(600)
@pytest.mark.parametrize("runner, expect, shards_done", [
    ("threads", ["prefect.server.api.server:create_app"], 0),
    # Dask workers are multiprocessing spawns; once one has run a shard it has started its own
    # Prefect server: a grandchild of the CLI. 4 shards on 2 workers: after the first, 3 remain.
    ("dask", ["prefect.server.api.server:create_app", "multiprocessing.spawn"], 1),
])
def test_kill_9_of_the_cli_leaves_no_process(tmp_path, small_corpus, runner, expect, shards_done):
    run_dir = tmp_path / "run"
    log = (tmp_path / "cli.log").open("wb")
    with ScriptedServer(latency_ms=300) as llm:
        cli = subprocess.Popen(
            [str(CLI), "run", "--corpus", small_corpus, "--out", str(run_dir), "--limit", "40",
             "--candidates", "3", "--shard-size", "10", "--task-runner", runner],
            cwd=ROOT, env=_cli_env(tmp_path, llm), stdout=log, stderr=subprocess.STDOUT)
        tree: dict[int, int] = {}
        try:
            tree = _mid_run(cli, run_dir, expect, shards_done, timeout_s=300)
            time.sleep(1.0)  # let the tree settle (Dask: the workers' own children), then look again
            tree = _tree(cli.pid)
            rss_mb = sum(_rss_kb(p) for p in tree) / 1024
            reaper = [p for p in tree if "orphan_reaper" in _cmd(p)]
            assert len(reaper) == 1, "the program started no reaper"
            cpu_s, age_s = _cpu_and_age_s(reaper[0])
            cmds = {p: f"(parent {_stat(p)[1] if _stat(p) else '?'}) {_cmd(p)[:90]}" for p in tree}
            os.kill(cli.pid, signal.SIGKILL)  # the CLI alone: not its process group
            t0 = time.monotonic()
            cli.wait()
            left = _alive(tree)
            while left and time.monotonic() - t0 < 20:
                time.sleep(0.1)
                left = _alive(tree)
            gone_s = time.monotonic() - t0
            print(f"\n[{runner}] kill -9 of the CLI {cli.pid}: {len(tree)} processes "
                  f"({rss_mb:.0f} MB RSS) gone {gone_s:.1f} s later; the reaper used {cpu_s:.2f} CPU s "
                  f"in its {age_s:.0f} s" + "".join(f"\n  {p}: {c}" for p, c in cmds.items()))
            assert not left, {p: cmds[p] for p in left}
        finally:
            if cli.poll() is None:
                cli.kill()
                cli.wait()
            for pid in _alive(tree):  # a failed test leaks nothing either
                os.kill(pid, signal.SIGKILL)
            log.close()


@pytest.fixture
def fresh_prefect_settings(monkeypatch):
    """Prefect's global settings rebuilt from the environment after the test changed both."""
    yield
    monkeypatch.undo()
    from prefect.context import refresh_global_settings_context

    refresh_global_settings_context()


def test_server_start_timeout_is_generous_unless_the_user_set_one(tmp_path, monkeypatch,
                                                                   fresh_prefect_settings):
    import prefect.context
    from prefect.settings import Settings

    from flows.cli_common import SERVER_START_DEFAULT_S, default_server_start_timeout

    for name in (SETTING, "PREFECT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(tmp_path / "profiles.toml"))
    default_server_start_timeout()
    assert os.environ[SETTING] == str(SERVER_START_DEFAULT_S)
    assert SERVER_START_DEFAULT_S > 20  # Prefect's own default
    # what SubprocessASGIServer.start reads outside any settings context
    ephemeral = prefect.context.GLOBAL_SETTINGS_CONTEXT.settings.server.ephemeral
    assert ephemeral.startup_timeout_seconds == SERVER_START_DEFAULT_S

    monkeypatch.setenv(SETTING, "45")
    default_server_start_timeout()
    assert os.environ[SETTING] == "45"

    # `prefect config set` writes the active profile: that is the user's choice too
    monkeypatch.delenv(SETTING)
    (tmp_path / "profiles.toml").write_text(f'active = "mine"\n[profiles.mine]\n{SETTING} = 33\n')
    default_server_start_timeout()
    assert SETTING not in os.environ and Settings().server.ephemeral.startup_timeout_seconds == 33


@pytest.mark.prefect_server
@pytest.mark.timeout(300)
def test_a_server_start_timeout_names_the_setting(tmp_path, small_corpus):
    # 0 s: Prefect gives up at once, as it would after 20 s on a busy machine
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update({SETTING: "0", "PREFECT_HOME": str(tmp_path / "prefect-home"),
                "OPENAI_BASE_URL": "http://127.0.0.1:9/v1", "GECKO_LLM_MODEL": "scripted",
                "COLUMNS": "400"})  # one line per message: rich wraps at the terminal width
    out = subprocess.run([str(CLI), "run", "--corpus", small_corpus, "--out", str(tmp_path / "run"),
                          "--limit", "4"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 1
    assert "Timed out while attempting to connect to ephemeral Prefect API server" in out.stderr
    assert f"`export {SETTING}=600`" in out.stderr, out.stderr
