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
