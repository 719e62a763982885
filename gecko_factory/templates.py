"""Versioned prompt templates, read from `gecko_factory/prompts/*.txt`.

A template file holds sections (`### name` lines). Its version is the file name plus a hash of its
text, so editing a prompt changes every cache key and shard marker that depends on it.
Placeholders are `{name}` and are filled by plain replacement (passages may contain braces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from gecko_factory.hashing import sha256_hex

PROMPT_DIR = Path(__file__).parent / "prompts"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class Template:
    name: str
    version: str
    sections: dict[str, str]

    def render(self, section: str, **values: str) -> str:
        """One pass over the template's text: a value is never searched for placeholders (a
        passage that reads "{query}" stays as written; replacing one key after another put the
        query there)."""
        return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), self.sections[section])


@lru_cache(maxsize=None)
def load_template(name: str) -> Template:
    path = PROMPT_DIR / f"{name}.txt"
    raw = path.read_text(encoding="utf-8")
    sections: dict[str, str] = {}
    current = None
    for line in raw.splitlines(keepends=True):
        if line.startswith("### "):
            current = line[4:].strip()
            sections[current] = ""
        elif current is not None:
            sections[current] += line
    # A section's trailing newline is layout in the file, not part of the prompt.
    sections = {k: v.rstrip("\n") for k, v in sections.items()}
    digest = sha256_hex(raw, length=8)
    return Template(name=name, version=f"{name}@{digest}", sections=sections)


# The templates that shape each judge form's scores: what a recipe's and an audit's identity
# carry for the judge, so an edit to any of them invalidates the shards and audits it shaped.
_JUDGE_TEMPLATES = {"shared_prefix": ("judge_v1", "judge_shared_v1")}


def judge_templates(judge_mode: str) -> tuple[str, ...]:
    return _JUDGE_TEMPLATES.get(judge_mode, ("judge_v1",))


def prompt_versions(judge_mode: str) -> dict[str, str]:
    """A recipe's prompt versions: the writer's template and those of its judge form."""
    return {name: load_template(name).version for name in ("synthesize_v1", *judge_templates(judge_mode))}


def judge_prompt_version(prompt_versions: dict[str, str], judge_mode: str) -> str:
    """The judge's prompt version in a recipe's `prompt_versions` (one template's version for
    the forms that read judge_v1 alone, as audits have always recorded it)."""
    return "+".join(prompt_versions.get(name, "") for name in judge_templates(judge_mode))
