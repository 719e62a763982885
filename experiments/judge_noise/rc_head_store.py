"""Is the RC head store the same judge? A judge audit's RC scores recomputed with the store off.

    python experiments/judge_noise/rc_head_store.py AUDIT_DIR [OUT_DIR]

AUDIT_DIR is a finished two-prompt `gecko-factory audit` folder of the default labelled set
(SciFact train), judged with the head store on (the embedded default). Every candidate's RC chat is asked again, one at a time, of a fresh embedded
server with `prefix_break` off, so each chat computes its head in the same batches as the rest
(the only difference: llama.cpp's batch shapes). QL is kept as judged: the store does not touch
QL prompts. The scores go to OUT_DIR (default AUDIT_DIR-rc_without_store) as a copy of the audit
with only RC replaced, and its report is written there by the audit's own code, so the two reports
differ by the store alone. Printed: the per-candidate RC deviation, the claims whose five
candidates keep their RC order, and the claims where each version picks a labelled abstract as
the negative under the default fusion. Resumable (RC answers are appended per claim); ~15 s a
claim with the 1.5B on 2 cores.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from gecko_factory.audit.judging import JudgedQuery
from gecko_factory.audit.report import cosine_of, scored
from gecko_factory.audit.run import AuditSpec, dataset_of, report_step
from gecko_factory.corpus_store import open_corpus
from gecko_factory.fusion import FusionConfig, NegativeGuard, choose_negative, choose_positive, fuse
from gecko_factory.judge import _relevance, judge_passage
from gecko_factory.llm.client import LLMClient
from gecko_factory.llm.embedded import EmbeddedServer
from gecko_factory.llm.settings import EMBEDDED_JUDGE_MODEL, LLMSettings


async def recompute(records: list[dict], store, passage_chars: int, answers: Path) -> dict[str, list[float]]:
    done = {}
    if answers.exists():
        done = {r["query_id"]: r["rc"] for r in map(json.loads, answers.read_text().splitlines())}
    todo = [r for r in records if r["query_id"] not in done]
    if not todo:
        return done
    server = EmbeddedServer(LLMSettings(_env_file=None, judge_model=EMBEDDED_JUDGE_MODEL))
    server.start()
    client = LLMClient(LLMSettings(_env_file=None, model=EMBEDDED_JUDGE_MODEL, prefix_break=False,
                                   timeout_s=1800), server.base_url)
    try:
        with answers.open("a") as out:
            for r in todo:
                rcs = [await _relevance(client, r["query"], judge_passage(store[c["id"]], passage_chars))
                       for c in r["candidates"]]
                done[r["query_id"]] = rcs
                out.write(json.dumps({"query_id": r["query_id"], "rc": rcs}) + "\n")
                out.flush()
    finally:
        await client.aclose()
        server.stop()
    return done


def negatives_labelled(records: list[dict], labels: list[set[str]]) -> list[str]:
    """Claims whose negative under the default fusion and guard is a labelled abstract."""
    fusion, guard, out = FusionConfig.parse("rrf+keep_seed"), NegativeGuard(), []
    for raw, rel in zip(records, labels):
        rec = JudgedQuery.from_json(raw)
        cands = scored(rec)
        fused = fuse(cands, fusion)
        pos = choose_positive(cands, fused, fusion, rec.seed_id)
        neg = choose_negative(cands, fused, pos, rec.seed_id, guard, cosine_of(rec))
        if neg is not None and neg.id in rel:
            out.append(rec.query_id)
    return out


def main() -> None:
    audit = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else audit.with_name(audit.name + "-rc_without_store")
    identity = json.loads((audit / "last_identity.json").read_text())
    if identity["judge_mode"] != "two_prompt":
        raise SystemExit(f"{audit}: judged {identity['judge_mode']}; the head store is two-prompt's")
    judged = next((audit / "judged").glob("*.jsonl"))
    if not out.exists():
        shutil.copytree(audit, out, ignore=shutil.ignore_patterns("audit*.json", "audit*.md", "cache"))
    records = [json.loads(line) for line in judged.read_text().splitlines()]
    rc_off = asyncio.run(recompute(records, open_corpus(out / "corpus"),
                                   identity["judge_passage_chars"], out / "rc_without_store.jsonl"))
    without = json.loads(json.dumps(records))
    for r in without:
        for c, rc in zip(r["candidates"], rc_off[r["query_id"]]):
            c["rc"] = rc
    (out / "judged" / judged.name).write_text("".join(json.dumps(r) + "\n" for r in without))

    dev = [abs(a["rc"] - b["rc"]) for r, w in zip(records, without)
           for a, b in zip(r["candidates"], w["candidates"])]
    order = [sorted(range(len(r["candidates"])), key=lambda i: -r["candidates"][i]["rc"]) for r in records]
    order_off = [sorted(range(len(w["candidates"])), key=lambda i: -w["candidates"][i]["rc"]) for w in without]
    print(f"{len(records)} claims, {len(dev)} candidates: |RC with - without the store| mean "
          f"{statistics.mean(dev):.3f}, median {statistics.median(dev):.3f}, max {max(dev):.3f} nats; "
          f"RC order of the candidates kept in {sum(a == b for a, b in zip(order, order_off))} claims")
    labels = [dataset_of(AuditSpec()).qrels[r["query_id"]] for r in records]
    print("labelled abstract as the negative (default fusion, guarded): with the store",
          negatives_labelled(records, labels), "without", negatives_labelled(without, labels))
    spec = AuditSpec(out=str(out), limit=len(records), cache=False)
    print(report_step(spec, identity).to_markdown())


if __name__ == "__main__":
    main()
