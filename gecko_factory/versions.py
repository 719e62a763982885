"""Data-set versions: incremental refreshes of a FRet data set over a corpus that changes.

A data-set root holds `versions/v0001`, `versions/v0002`, ...; each is an ordinary FRet run folder
(plan, corpus, shards, manifest) for the paragraphs that were new or changed at that refresh, plus
`version.json`, written last, which makes the version exist. `version.json` lists every shard the
version is made of — its own and those it reuses from earlier versions, by path, never copied —
with the example ids to leave out of each (their seed was deleted or changed, or their positive or
negative paragraph is gone).

Entry points: `plan_refresh(root, corpus) -> RefreshPlan` (what is new, what is kept, no LLM), then
the FRet flow runs on `RefreshPlan.run_dir` with `seed_ids_file`, then `commit_version(...)`.
A paragraph's identity is its content: sha256 of title and text, so an edited paragraph that keeps
its id is processed again, and an unchanged one never is.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from gecko_factory.corpus import CorpusSpec, Paragraph, load_corpus
from gecko_factory.files import atomic_write_json, atomic_write_text
from gecko_factory.hashing import sha256_hex

VERSION_FILE = "version.json"


def content_hash(p: Paragraph) -> str:
    return sha256_hex(p.title, p.text, length=32)


def version_dirs(root: Path) -> list[Path]:
    """Committed versions, oldest first (a folder without version.json is an unfinished refresh)."""
    base = root / "versions"
    if not base.is_dir():
        return []
    return sorted(d for d in base.iterdir() if d.name.startswith("v") and (d / VERSION_FILE).exists())


def read_version(version_dir: Path) -> dict:
    return json.loads((version_dir / VERSION_FILE).read_text())


@dataclass
class RefreshPlan:
    root: Path
    version: str  # e.g. "v0002"
    corpus_count: int
    new_seed_ids: list[str]  # new or changed paragraphs: the only ones the LLM sees
    reused: list[dict] = field(default_factory=list)  # {"path", "exclude": [example ids], "rows"}
    dropped_examples: int = 0  # earlier examples left out of this version
    seed_hashes: dict[str, str] = field(default_factory=dict)  # kept seeds -> content hash
    new_hashes: dict[str, str] = field(default_factory=dict)  # new seeds -> content hash
    previous: str | None = None
    config_changed: bool = False

    def save(self) -> Path:
        path = self.run_dir / "refresh.json"
        atomic_write_json(path, {**self.__dict__, "root": str(self.root)})
        return path

    @classmethod
    def load(cls, path: Path) -> "RefreshPlan":
        raw = json.loads(Path(path).read_text())
        return cls(**{**raw, "root": Path(raw["root"])})

    @property
    def run_dir(self) -> Path:
        return self.root / "versions" / self.version

    @property
    def seed_ids_file(self) -> Path:
        return self.run_dir / "seed_ids.txt"

    @property
    def changed(self) -> bool:
        return bool(self.new_seed_ids) or self.dropped_examples > 0 or self.previous is None


def plan_refresh(root: Path, corpus: CorpusSpec, config_hash: str) -> RefreshPlan:
    """Compare the corpus as it is now with the latest version; make no LLM call.

    `config_hash` is the FRet output hash of this refresh: when it differs from the latest
    version's (another LLM, N, prompt...), nothing is reused, since mixing them would make one
    data set of two recipes."""
    paragraphs = load_corpus(corpus).paragraphs
    if not paragraphs:
        raise ValueError(f"corpus {corpus.path!r} has no paragraphs")
    hashes = {p.id: content_hash(p) for p in paragraphs}
    done = version_dirs(root)
    number = int(done[-1].name[1:]) + 1 if done else 1
    plan = RefreshPlan(root, f"v{number:04d}", len(paragraphs), [])
    live: set[str] = set()
    if done:
        last = read_version(done[-1])
        plan.previous = done[-1].name
        plan.config_changed = last["config_hash"] != config_hash
    if done and not plan.config_changed:
        # A seed stays processed while its paragraph is unchanged; seeds skipped earlier (invalid
        # LLM output, counted in that version's manifest) are not retried.
        live = {s for s, h in last["seed_hashes"].items() if hashes.get(s) == h}
        redo: set[str] = set()
        for shard in last["shards"]:
            exclude = set(shard["exclude"])
            before = len(exclude)
            frame = pl.read_parquet(root / shard["path"], columns=[
                "example_id", "seed_id", "positive_id", "positive_title", "positive_text",
                "negative_id", "negative_title", "negative_text"])
            for ex, seed, *sides in frame.iter_rows():
                if ex in exclude:
                    continue
                if seed not in live:
                    exclude.add(ex)  # the seed paragraph was deleted or edited
                elif not all(hashes.get(pid) == content_hash(Paragraph(pid, title, text))
                             for pid, title, text in (sides[:3], sides[3:])):
                    exclude.add(ex)  # its positive or negative is gone: judge the seed again
                    redo.add(seed)
            plan.dropped_examples += len(exclude) - before
            plan.reused.append({"path": shard["path"], "exclude": sorted(exclude),
                                "rows": frame.height - len(exclude)})
        live -= redo
    plan.new_seed_ids = [p.id for p in paragraphs if p.id not in live]
    plan.seed_hashes = {s: hashes[s] for s in live}
    plan.new_hashes = {s: hashes[s] for s in plan.new_seed_ids}
    return plan


def prepare_run_dir(plan: RefreshPlan) -> None:
    """The version's run folder with its seed list; an unfinished earlier attempt is reused only
    when it was planned for exactly these seeds (then its committed shards resume)."""
    if plan.run_dir.exists() and plan.seed_ids_file.exists():
        if plan.seed_ids_file.read_text().split() != plan.new_seed_ids:
            shutil.rmtree(plan.run_dir)  # the corpus moved on; its LLM answers stay in the cache
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(plan.seed_ids_file, "".join(s + "\n" for s in plan.new_seed_ids))


def commit_version(plan: RefreshPlan, corpus: str, config_hash: str, manifest: dict | None) -> dict:
    """Write the version's Hugging Face card (README.md), then version.json (atomically, last):
    the version now exists, and `datasets.load_dataset(version_dir)` gives its rows."""
    # hf_card reads versions (this module) to list a version's files: imported here, not at the top.
    from gecko_factory.hf_card import write_readme

    own, seed_hashes = [], dict(plan.seed_hashes)
    if manifest is not None:
        # Only the seeds this run planned (a --limit may leave some for the next refresh).
        planned = json.loads((plan.run_dir / "plan.json").read_text())["shards"]
        seed_hashes.update({s: plan.new_hashes[s] for shard in planned for s in shard})
        for f in sorted((plan.run_dir / "shards").glob("part-*.parquet")):
            rows = pl.scan_parquet(f).select(pl.len()).collect().item()
            own.append({"path": str(f.relative_to(plan.root)), "exclude": [], "rows": rows})
    shards = plan.reused + own
    record = {
        "version": plan.version, "previous": plan.previous,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "corpus": corpus, "config_hash": config_hash, "paragraphs": plan.corpus_count,
        "new_seeds": len(seed_hashes) - len(plan.seed_hashes),
        "examples": sum(s["rows"] for s in shards),
        "new_examples": sum(s["rows"] for s in own),
        "reused_examples": sum(s["rows"] for s in plan.reused),
        "dropped_examples": plan.dropped_examples,
        "llm_calls": (manifest or {}).get("llm_usage", {}).get("calls", 0),
        "license": _license(plan, manifest),
        "shards": shards, "seed_hashes": seed_hashes,
    }
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    write_readme(plan.run_dir, version=record)
    atomic_write_json(plan.run_dir / VERSION_FILE, record)
    return record


def _license(plan: RefreshPlan, manifest: dict | None) -> str | None:
    """The run's license option; a refresh with no new seed (no run) keeps the previous one's."""
    if manifest is not None:
        return manifest["config"].get("license")
    if plan.previous:
        return read_version(plan.root / "versions" / plan.previous).get("license")
    return None


def version_shards(version_dir: Path) -> list[tuple[Path, set[str]]]:
    """(shard file, example ids to leave out) for every shard a version is made of."""
    return record_shards(read_version(version_dir), version_dir.parent.parent)


def record_shards(record: dict, root: Path) -> list[tuple[Path, set[str]]]:
    return [(root / s["path"], set(s["exclude"])) for s in record["shards"]]


def list_versions(root: Path) -> list[dict]:
    """One summary row per version, oldest first, for `gecko-factory versions`."""
    rows = []
    for d in version_dirs(root):
        v = read_version(d)
        rows.append({k: v[k] for k in ("version", "created", "paragraphs", "new_seeds", "examples",
                                        "new_examples", "reused_examples", "dropped_examples",
                                        "llm_calls")})
    return rows
