"""experiments/judge_noise/yes_share.py: which candidates the RC gate lets through, counted by hand."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "judge_noise" / "yes_share.py"
spec = importlib.util.spec_from_file_location("yes_share", SCRIPT)
yes_share = importlib.util.module_from_spec(spec)
spec.loader.exec_module(yes_share)


def _claim(qid: str, seed: str, p_yes: dict[str, float]) -> dict:
    return {"query_id": qid, "seed_id": seed,
            "candidates": [{"id": d, "rc": math.log(p)} for d, p in p_yes.items()]}


def test_yes_is_p_above_one_half_split_into_labelled_and_other_candidates():
    claims = [_claim("1", "a", {"a": 0.9, "b": 0.6, "c": 0.2}), _claim("2", "d", {"d": 0.4, "e": 0.5})]
    (ly, ln), (oy, on), mean_p = yes_share.yes_shares(claims)
    assert (ly, ln) == (1, 2)  # 0.9 yes, 0.4 no
    assert (oy, on) == (1, 3)  # 0.6 yes; 0.2 no; exactly 1/2 is not a Yes
    assert math.isclose(mean_p, (0.9 + 0.6 + 0.2 + 0.4 + 0.5) / 5)


def test_files_are_also_compared_on_the_claims_they_all_judged(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(json.dumps(c) for c in [_claim("1", "x", {"x": 0.9}), _claim("2", "y", {"y": 0.1})]))
    b.write_text(json.dumps(_claim("2", "y", {"y": 0.8})) + "\n")
    yes_share.main([str(a), str(b)])
    out = capsys.readouterr().out.splitlines()
    assert "2 claims; Yes to labelled 1/2" in out[0]
    assert "the 1 claims all files judged): 1 claims; Yes to labelled 0/1" in out[1]
    assert "Yes to labelled 1/1" in out[3]
