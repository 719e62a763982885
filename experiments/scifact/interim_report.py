"""The experiment's table from the recipes finished so far, while `make experiment` is still
running (it writes experiment/report.md only at its end):
`python experiments/scifact/interim_report.py [OUT_DIR] [SCIFACT_ZIP]`.

The same `gecko_factory.experiment.report` the flow calls, over every tracked
`OUT_DIR/*/experiment_result.json`, against the base scored on SciFact test by the same
evaluation the flow uses (its corpus embeddings come from the cache after the first run: seconds).
"""

from __future__ import annotations

import sys
from pathlib import Path

from gecko_factory.evaluate import evaluate, load_scifact
from gecko_factory.experiment import ARMS, ArmResult, report, scores_by_dim
from gecko_factory.train.config import TrainConfig
from gecko_factory.train.train import base_model_path

def main(out_dir: Path, scifact_zip: str | None) -> str:
    results = [ArmResult.model_validate_json(p.read_text())
               for p in sorted(out_dir.glob("*/experiment_result.json"))]
    if not results:
        raise SystemExit(f"{out_dir}: no recipe has finished yet")
    order = list(ARMS)  # the flow's order: recipes, then the curve's fractions
    results.sort(key=lambda r: (r.train_fraction != 1.0, -r.train_fraction, order.index(r.arm), r.seed))
    dims = sorted({d for r in results for d in r.test}, reverse=True)  # what the arms were scored at
    base = evaluate(base_model_path(TrainConfig(out_dir=str(out_dir))), load_scifact(scifact_zip),
                    dims=dims)
    return report(scores_by_dim(base.model_dump()), results, dims)


if __name__ == "__main__":
    args = sys.argv[1:]
    out = Path(args[0]) if args else Path(__file__).parent / "experiment"
    print(main(out, args[1] if len(args) > 1 else None))
