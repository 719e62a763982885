"""What can go wrong with an LLM call, and which failures are worth another try.

The client (client.py) raises these; stages and tasks catch them to decide between failing the
unit of work (a service failure: it resumes later, its data is never skipped) and a counted skip
of one item (a request the server refused for its content).
"""

from __future__ import annotations

import json

from gecko_factory.llm.endpoints import (HTTPStatusError, MalformedResponse, RequestTimeout,
                                         TransportError)


class LLMError(RuntimeError):
    """A request that failed for good (not transient, or out of retries)."""


class LLMServiceError(LLMError):
    """The service failed, not the request: unreachable, timed out, 429/5xx or a malformed body,
    beyond the client's retries. The unit of work fails and resumes; its data is never skipped."""


class LLMUnreachable(LLMServiceError):
    """The server could not be reached at all."""


class LLMRequestRejected(LLMError):
    """The server refused this one request for its content (400/413/422: a prompt too long for
    the context, a parameter it does not take). Other requests may well succeed: the one item
    that needed it is a counted skip."""


# Refusals about one request's content. 401/403/404 are about the setup (key, model name, URL):
# they fail the unit of work like a bug, since every other request would fail the same way.
REJECTED_STATUSES = frozenset({400, 413, 422})


def is_transient(exc: BaseException) -> bool:
    """Worth retrying: the same request may well succeed later."""
    if isinstance(exc, (TransportError, MalformedResponse, json.JSONDecodeError)):
        return True  # RequestTimeout is a TransportError
    return isinstance(exc, HTTPStatusError) and (exc.status == 429 or exc.status >= 500)


def is_overload(exc: BaseException) -> bool:
    """The server says it has too much to do: the adaptive limit backs off (a 500 or a refused
    connection says nothing about how many calls it can take)."""
    return isinstance(exc, RequestTimeout) or (isinstance(exc, HTTPStatusError) and exc.status in (429, 503))
