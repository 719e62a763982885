"""`make bench` rewrites BENCHMARKS.md without losing what it did not measure."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.run_all import keep_unwritten  # noqa: E402

OLD = """# Benchmarks

Written on 2026-11-30.

| benchmark | ours vs alternative | ratio | goal | met | status |
|---|---|---:|---|---|---|
| client | Client cost | 5.4 | >= 500 | yes | ok (25 s) |
| mining | Mining | 1.05 | > 1 | yes | ok (45 s) |

## bench/client.py — Client cost

old client figures

## bench/mining.py — Mining

old mining figures

## gecko-factory audit — the judge against human labels

100 claims, by hand
"""

NEW = """# Benchmarks

Written on 2026-12-03.

| benchmark | ours vs alternative | ratio | goal | met | status |
|---|---|---:|---|---|---|
| client | Client cost | 6.1 | >= 500 | yes | ok (24 s) |

## bench/client.py — Client cost

new client figures
"""


def test_a_partial_run_keeps_the_other_benchmarks_and_the_hand_written_sections():
    text = keep_unwritten(OLD, NEW, {"client"})
    assert "new client figures" in text and "old client figures" not in text
    assert "| client | Client cost | 6.1 |" in text and "| client | Client cost | 5.4 |" not in text
    # mining was not run: its row joins the table (before the sections), its section stays
    table_end = text.index("## ")
    assert text.index("| mining | Mining | 1.05 |") < table_end
    assert "old mining figures" in text
    assert text.index("## bench/client.py") < text.index("## bench/mining.py") \
        < text.index("## gecko-factory audit")
    assert "100 claims, by hand" in text
    assert text.count("## ") == 3


def test_a_full_run_replaces_every_benchmark_but_keeps_the_audit():
    text = keep_unwritten(OLD, NEW, {"client", "mining"})
    assert "old mining figures" not in text and "| mining |" not in text
    assert "100 claims, by hand" in text


def test_no_previous_file():
    assert keep_unwritten("", NEW, {"client"}) == NEW


def test_the_header_of_a_partial_run_does_not_claim_the_rows_it_kept():
    from datetime import datetime, timezone

    from bench.run_all import render

    rows = [{"name": "train", "command": "python bench/train.py", "seconds": 97.0, "status": "ok", "result": None}]
    started = datetime(2026, 12, 3, 7, 15, tzinfo=timezone.utc)
    partial = render(rows, ["--only", "train"], started, 97.0, partial=True).splitlines()[2]
    assert partial.startswith("The rows of train were rewritten by `python bench/run_all.py --only train`")
    assert "kept from earlier runs" in partial
    full = render(rows, [], started, 97.0).splitlines()[2]
    assert full.startswith("Written by `python bench/run_all.py ` on 2026-12-03 07:15 UTC")
    # nor their machine: the VM's CPU model changes between sessions (AMD EPYC, then Intel Xeon)
    machine_line = render(rows, ["--only", "train"], started, 97.0, partial=True).splitlines()[3]
    assert machine_line.startswith("Machine of the rewritten rows: ") and "own run's machine" in machine_line
    assert render(rows, [], started, 97.0).splitlines()[3].startswith("Machine: ")


def test_a_partial_run_rewrites_in_place_and_reads_only_the_summary_table():
    """Seen 2026-12-03: `--only train` moved train's row and section to the top and copied the
    rows of other sections' own tables (`| client | calls/s | ...`) into the summary."""
    old = OLD.replace("old client figures", "| client | calls/s |\n|---|---:|\n| ours | 1,968 |") \
        + "\n## bench/concurrency.py — by hand\n\n| concurrency | calls/s |\n|---|---:|\n| fixed 8 | 141 |\n"
    new = NEW.replace("client", "mining").replace("Client cost", "Mining").replace("6.1", "1.10")
    text = keep_unwritten(old, new, {"mining"})
    head = text.split("## ")[0]
    assert [x.split(" | ")[0] for x in head.splitlines() if x.startswith("| ") and "---" not in x] == \
        ["| benchmark", "| client", "| mining"]
    assert "| mining | Mining | 1.10 |" in head and "| client | calls/s |" not in head
    assert [h.split(" ")[0] for h in text.split("\n## ")[1:]] == \
        ["bench/client.py", "bench/mining.py", "gecko-factory", "bench/concurrency.py"]
    assert "new mining figures" in text and "old mining figures" not in text
    assert keep_unwritten(text, new, {"mining"}) == text  # the same run again changes nothing
