"""A labelled retrieval set in BEIR layout whose audit figures are known by construction.

Each query has a topic of its own and two documents on it: V holds the query's words verbatim
(retrieval, and the scripted judge's word-overlap scores, put it first), O does not. Which one
is labelled, and which one carries the scripted server's oracle marks `[[ql+]]` / `[[rc+]]`
(that signal then prefers it), is set per query by TRUTH, so with N = 2 candidates (the topic's
two documents) the precision@1 of retrieval, QL and RC is the share of 1s in TRUTH's columns.
"""

from __future__ import annotations

import json
from pathlib import Path

from gecko_factory.testing.scripted_server import QL_MARK, RC_MARK

TOPICS = [  # (query, V's rest, O: the same topic without the query's words)
    ("volcano lava eruption", "Molten rock pours from the crater.", "Magma chambers sit beneath mountains and vent ash clouds."),
    ("violin orchestra strings", "Bows draw sound from them.", "A cellist and a harpist rehearse a symphony for the concert hall."),
    ("bitcoin blockchain ledger", "Miners append blocks.", "Cryptocurrency wallets hold private keys for digital coins."),
    ("penguin antarctic colony", "They huddle against the cold.", "Flightless seabirds of the southern ice shelves dive for krill."),
    ("tennis racket serve", "The ball flies over the net.", "Wimbledon finals are played on grass courts each summer."),
    ("glacier melting climate", "Ice retreats every decade.", "Rising temperatures shrink the frozen rivers of the Alps."),
    ("sourdough bread yeast", "The dough rises overnight.", "Bakers knead flour and water and bake loaves in hot ovens."),
    ("chess opening gambit", "White sacrifices a pawn.", "Grandmasters study the Sicilian defence and endgame tactics."),
    ("honeybee hive pollen", "Workers return with nectar.", "Apiarists keep colonies of insects that make wax and honey."),
    ("submarine sonar torpedo", "The hull dives silently.", "Naval vessels patrol beneath the ocean surface for months."),
]
# Per query: (retrieval right, QL right, RC right). Retrieval 6/10, QL 7/10, RC 3/10.
TRUTH = [(1, 1, 0), (1, 1, 0), (1, 1, 1), (1, 0, 0), (1, 0, 1), (1, 1, 0),
         (0, 1, 0), (0, 1, 1), (0, 1, 0), (0, 0, 0)]


def make_beir(root: Path) -> Path:
    """The labelled set, and what each signal and fusion must score on it (by hand below)."""
    (root / "qrels").mkdir(parents=True)
    docs, queries, qrels = [], [], []
    for i, ((query, v_rest, o_text), (ret, ql, rc)) in enumerate(zip(TOPICS, TRUTH)):
        labelled = "v" if ret else "o"  # retrieval puts V first, so it is right iff V is labelled
        other = "o" if ret else "v"
        # the word-overlap judge also prefers V: a mark on O moves that signal to O
        marks = {"v": [], "o": []}
        for right, mark in ((ql, QL_MARK), (rc, RC_MARK)):
            if (labelled if right else other) == "o":
                marks["o"].append(mark)
        docs += [{"_id": f"v{i}", "title": "", "text": f"{query}. {v_rest} {' '.join(marks['v'])}".strip()},
                 {"_id": f"o{i}", "title": "", "text": f"{o_text} {' '.join(marks['o'])}".strip()}]
        queries.append({"_id": f"q{i}", "text": query})
        qrels.append(f"q{i}\t{labelled}{i}\t1\n")
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(qrels))
    return root
