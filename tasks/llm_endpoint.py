"""The LLM endpoint a flow talks to: the configured one, or the embedded server for the run."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from gecko_factory.llm.settings import LLMSettings


@contextmanager
def llm_endpoint(settings: LLMSettings) -> Iterator[str]:
    """Yields a base URL; starts (and later stops) the embedded server when none is configured."""
    if settings.base_url:
        yield settings.base_url
        return
    from gecko_factory.llm.embedded import EmbeddedServer

    with EmbeddedServer(settings) as server:
        yield server.base_url
