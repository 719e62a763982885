"""The `openai` package as the HTTP transport of one endpoint (GECKO_LLM_TRANSPORT=openai).

The default transport (endpoints.Endpoint) is a small keep-alive HTTP/1.1 client: ~0.3 ms of CPU
per call against ~3-4 ms for `openai.AsyncOpenAI` (bench/client.py). This one trades that speed
for what the openai client does and ours does not: HTTP(S)_PROXY and the other httpx environment
settings, redirects, HTTP/2-capable gateways. Same interface and the same errors as `Endpoint`,
so retries, balancing, cache and budget work unchanged. The answer is read as raw JSON (cast to
httpx.Response), not built into openai's pydantic models.
"""

from __future__ import annotations

import httpx
import openai

from gecko_factory.llm.endpoints import (ConnectFailed, Endpoint, HTTPStatusError, MalformedResponse, RequestTimeout,
                                         parse_retry_after)


class OpenAIEndpoint(Endpoint):
    def __init__(self, url: str, limit: int, api_key: str | None):
        super().__init__(url, limit, b"")
        # The key lives inside the openai client only; max_retries=0: LLMClient retries.
        self._client = openai.AsyncOpenAI(base_url=url, api_key=api_key or "unused", max_retries=0)

    async def request(self, method: str, path: str, body: dict | None, timeout: float) -> dict:
        try:
            if method == "GET":
                response = await self._client.get(path, cast_to=httpx.Response, options={"timeout": timeout})
            else:
                response = await self._client.post(path, body=body, cast_to=httpx.Response,
                                                   options={"timeout": timeout})
        except openai.APITimeoutError:
            raise RequestTimeout(f"no answer within {timeout}s") from None
        except openai.APIConnectionError as exc:
            raise ConnectFailed(str(exc.__cause__ or exc)) from None
        except openai.APIStatusError as exc:
            err = exc.body.get("message") if isinstance(exc.body, dict) else exc.body
            raise HTTPStatusError(exc.status_code, str(err or exc.message),
                                  parse_retry_after(exc.response.headers.get("retry-after"))) from None
        try:
            answer = response.json()
        except ValueError as exc:
            raise MalformedResponse(f"the answer is not JSON: {exc}") from None
        if not isinstance(answer, dict):
            raise MalformedResponse(f"the answer is a {type(answer).__name__}, not a JSON object")
        return answer

    def close(self) -> None:
        pass  # the httpx pool closes with the event loop's client; nothing held per call
