"""How often does each judge form's RC answer Yes? Labelled abstracts against the other candidates.

    python experiments/judge_noise/yes_share.py RECORDS.jsonl [RECORDS.jsonl ...]

Each argument is an audit's judged records (`AUDIT_DIR/judged/<id>.jsonl`, one line per claim:
its labelled `seed_id` and its candidates' `rc`). The keep-seed fusion lets a candidate replace
the seed only when the judge answers Yes for it (fusion.YES: P(Yes) > 1/2), so that gate guards
the positive only if RC says No to most candidates that are not labelled. Printed per file: the
share of candidates with P(Yes) > 1/2, for the labelled abstracts and for the others, over all its
claims and over the claims every file judged (so two forms are compared on the same claims).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gecko_factory.fusion import YES


def yes_shares(records: list[dict]) -> tuple[tuple[int, int], tuple[int, int], float]:
    """((labelled Yes, labelled), (other Yes, others), mean P(Yes)) over these claims."""
    labelled, others, probs = [0, 0], [0, 0], []
    for r in records:
        for c in r["candidates"]:
            tally = labelled if c["id"] == r["seed_id"] else others
            tally[0] += c["rc"] > YES
            tally[1] += 1
            probs.append(math.exp(c["rc"]))
    return tuple(labelled), tuple(others), sum(probs) / max(len(probs), 1)


def line(name: str, records: list[dict]) -> str:
    (ly, ln), (oy, on), mean_p = yes_shares(records)
    return (f"{name}: {len(records)} claims; Yes to labelled {ly}/{ln} ({ly / max(ln, 1):.3f}), "
            f"to others {oy}/{on} ({oy / max(on, 1):.3f}); mean P(Yes) {mean_p:.3f}")


def main(paths: list[str]) -> None:
    files = {p: [json.loads(s) for s in Path(p).read_text().splitlines() if s.strip()] for p in paths}
    common = set.intersection(*({r["query_id"] for r in recs} for recs in files.values()))
    for path, records in files.items():
        print(line(f"{path} (all)", records))
        if len(files) > 1:
            print(line(f"{path} (the {len(common)} claims all files judged)",
                       [r for r in records if r["query_id"] in common]))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
