"""What each distillation teacher asks of the student, on a FRet run's own rows (no LLM call, no
training; seconds): `python experiments/scifact/teacher_targets.py [RUN_DIR]`.

For each row whose judged candidates all have a QL and an RC score and include the seed, the
softmax over the candidates of
- the base student: the retriever's cosine (the row's `similarity`, all-MiniLM-L6-v2 in the run)
  at the training temperature, and
- each teacher: gecko_factory.train.data.teacher_logits, at teacher temperature 1 (the default),
and reports the mass on the seed (the paragraph the query was written from: a noisy label, right
for ~85 % of Gecko's queries), how often the seed is on top, the entropy, and KL(teacher ||
student), the distillation loss at step 0. A teacher flatter than the student and no more often
right asks the student to spread its mass over the hard candidates: it can only lose.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import polars as pl

from gecko_factory.train.config import TrainConfig
from gecko_factory.train.data import teacher_logits


def softmax(x: list[float], temperature: float) -> np.ndarray:
    z = np.asarray(x, dtype=np.float64) / temperature
    z = np.exp(z - z.max())
    return z / z.sum()


def main(run_dir: Path) -> None:
    student_t = TrainConfig.model_fields["temperature"].default
    frame = pl.read_parquet(sorted((run_dir / "shards").glob("part-*.parquet")),
                            columns=["query", "seed_id", "candidates"])
    rows = [r for r in frame.to_dicts()
            if r["seed_id"] in {c["id"] for c in r["candidates"]}
            and all(c["ql"] is not None and c["rc"] is not None for c in r["candidates"])]
    sources = {f"student: cosine / {student_t:g}": None, "teacher fused": "fused",
               "teacher ql (per query word)": "ql", "teacher rc": "rc"}
    table = {name: [] for name in sources}
    for r in rows:
        seed = [c["id"] for c in r["candidates"]].index(r["seed_id"])
        student = softmax([c["similarity"] for c in r["candidates"]], student_t)
        for name, score in sources.items():
            p = (student if score is None
                 else softmax(teacher_logits(r["candidates"], score, r["query"]), 1.0))
            table[name].append((p[seed], float(p.argmax() == seed), -(p * np.log(p)).sum(),
                                (p * (np.log(p) - np.log(student))).sum()))
    print(f"{run_dir}: {len(rows)} of {len(frame)} rows (all candidates judged, seed among them)\n")
    print("| distribution over the judged candidates | mass on the seed | seed on top | "
          "entropy (nats) | KL(· ‖ student) at step 0 |")
    print("|---|---:|---:|---:|---:|")
    for name, values in table.items():
        m = np.mean(values, axis=0)
        print(f"| {name} | {m[0]:.3f} | {m[1]:.3f} | {m[2]:.3f} | {m[3]:.3f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
