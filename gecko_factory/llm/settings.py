"""LLM connection settings, from the environment or a `.env` file (pydantic-settings).

The openai conventions are honoured (`OPENAI_BASE_URL`, `OPENAI_API_KEY`); the rest use the
`GECKO_LLM_` prefix. No base URL means "start the embedded llama.cpp server". Several base URLs,
comma-separated, share the load (one key for all), each with `concurrency` calls in flight.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

EMBEDDED_MODEL_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m"
# The embedded server's judge when the user names none (GECKO_LLM_JUDGE_MODEL); chosen by the
# judge audit (README, "Auditing the judge"): on SciFact train claims the 1.5B's fused choice is
# right where the 0.5B's RC signal is below chance, so the small model writes and the 1.5B judges.
EMBEDDED_JUDGE_MODEL = "qwen2.5-coder-1.5b-instruct-q4_k_m"


class LLMSettings(BaseSettings):
    # populate_by_name: LLMSettings(base_url=...) from Python; without it the aliased fields take
    # only their alias names and the keyword is silently ignored (bench/client.py's was).
    model_config = SettingsConfigDict(env_prefix="GECKO_LLM_", env_file=".env", extra="ignore",
                                      populate_by_name=True)

    base_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("GECKO_LLM_BASE_URL", "OPENAI_BASE_URL"),
        description="OpenAI-compatible base URL (…/v1), or several, comma-separated. Unset: embedded.",
    )
    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("GECKO_LLM_API_KEY", "OPENAI_API_KEY"),
        description="Never logged, never written: SecretStr keeps it out of reprs and dumps.",
    )
    model: str = Field(default=EMBEDDED_MODEL_NAME, description="GECKO_LLM_MODEL")
    judge_model: str | None = Field(
        default=None, description="GECKO_LLM_JUDGE_MODEL: the model that scores candidates (QL, RC), "
        "on the same endpoints; unset: `model` writes and judges. A small model can write queries "
        "while a stronger one judges (the judge audit says whether it is worth it)")
    transport: Literal["fast", "openai"] = Field(
        default="fast", description="GECKO_LLM_TRANSPORT: 'fast' (own keep-alive HTTP/1.1, no "
        "proxies or redirects) or 'openai' (the openai package: HTTP(S)_PROXY, redirects; ~10x "
        "the client CPU per call)")
    concurrency: int = Field(default=8, ge=1, le=4096, description="requests in flight at once, per endpoint "
                             "(with adaptive concurrency, where each endpoint's limit starts)")
    adaptive_concurrency: bool | None = Field(
        default=None, description="GECKO_LLM_ADAPTIVE_CONCURRENCY: learn each endpoint's limit from its "
        "latency and its 429s/timeouts (grow while latency holds, back off when it rises; "
        "gecko_factory/llm/concurrency.py), starting at `concurrency`, within [1, 1024]. Unset: on for "
        "configured endpoints unless GECKO_LLM_CONCURRENCY is set; off for the embedded server")
    prompt_logprobs_from: bool | None = Field(
        default=None, description="GECKO_LLM_PROMPT_LOGPROBS_FROM: send the embedded server's "
        "`prompt_logprobs_from` extension with QL requests, so that it computes the logits of the "
        "query's rows only (a fifth of the judge's prefill); other servers may refuse an unknown "
        "field. Unset: on for the embedded server, off for configured endpoints")
    prefix_break: bool | None = Field(
        default=None, description="GECKO_LLM_PREFIX_BREAK: send the embedded server's `prefix_break` "
        "extension with RC chats (where their shared instruction + query ends) and with the "
        "shared-prefix judge's prompt pairs (where their passage line ends), so that it computes "
        "each head once; other servers may refuse an unknown field. Unset: on "
        "for the embedded server, off for configured endpoints")
    timeout_s: float = Field(default=300.0, gt=0, description="per-request timeout")
    max_retries: int = Field(default=5, ge=0, description="retries of transient failures")
    backoff_s: float = Field(default=0.5, ge=0, description="first retry delay; doubles, with jitter")
    outage_retry_delays_s: list[float] = Field(
        default=[30.0, 120.0, 300.0],
        description="GECKO_LLM_OUTAGE_RETRY_DELAYS_S (JSON list): when the service still fails after "
        "the client's retries (down, timing out, 429/5xx), the whole shard is retried after each of "
        "these waits (Prefect shows it as AwaitingRetry), long enough to ride out a server restart; "
        "after the last one the shard is failed and `gecko-factory resume` redoes it. [] = fail at once.")
    price_prompt_per_m: float | None = Field(default=None, ge=0, description="USD per 1M prompt tokens")
    price_completion_per_m: float | None = Field(default=None, ge=0, description="USD per 1M completion tokens")
    embedded_model: str = Field(
        default=EMBEDDED_MODEL_NAME, description="GECKO_LLM_EMBEDDED_MODEL: the GGUF the embedded server "
        "loads when no base URL is set (gecko_factory.llm.model_files.EMBEDDED_MODELS)")
    embedded_threads: int | None = Field(default=None, description="llama.cpp threads (None: all cores)")
    embedded_ctx: int = Field(default=2048, ge=256, description="embedded server context length")

    @field_validator("base_url")
    @classmethod
    def _urls(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        from gecko_factory.llm.endpoints import split_base_urls

        return ",".join(split_base_urls(value))  # a clear error now, not at the first call

    def sends_extension(self, hint: bool | None) -> bool:
        """Whether the client sends one of the embedded server's extensions (`prompt_logprobs_from`,
        `prefix_break`): as the user set it, else only to the embedded server (no base URL)."""
        return not self.base_url if hint is None else hint

    def endpoints(self) -> list[str]:
        """The configured base URLs (empty: the embedded server)."""
        from gecko_factory.llm.endpoints import split_base_urls

        return split_base_urls(self.base_url) if self.base_url else []

    def adaptive(self) -> bool:
        """Whether the client adapts its limit: as set, else for configured endpoints whose user
        did not choose a concurrency (a number the user chose is kept as given)."""
        if self.adaptive_concurrency is not None:
            return self.adaptive_concurrency
        return bool(self.base_url) and "concurrency" not in self.model_fields_set

    def public_dict(self) -> dict:
        """Settings fit for a manifest: no key, and the base URLs without user:password@."""
        from gecko_factory.llm.endpoints import public_url

        endpoints = [public_url(u) for u in self.endpoints()]
        return {
            "base_url": ",".join(endpoints) or "embedded",
            "endpoints": endpoints or ["embedded"],
            "model": self.model,
            "judge_model": self.judge_model or self.model,
            "transport": self.transport,
            "concurrency": self.concurrency,
            "adaptive_concurrency": self.adaptive(),
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "outage_retry_delays_s": self.outage_retry_delays_s,
            "usd_per_1m_tokens": list(self.prices()),
        }

    def prices(self) -> tuple[float, float]:
        from gecko_factory.llm.budget import price_of

        return price_of(self.model, self.price_prompt_per_m, self.price_completion_per_m)


# The embedded server computes one request per context, and its contexts share the machine's
# cores. More in flight only queue there, and the queueing counts against each request's timeout:
# 8 in flight on a busy 2-core machine made requests time out and retry forever (seen). Two in
# flight cost throughput too: the writer's and the judge's contexts then compute at once, each
# with a thread per core, and one call's Python work (tokenizing, log-softmax, JSON) takes a core
# from the other's decode. bench/embedded.py, 2026-12-04, 4 seeds two-prompt on 2 cores, each
# run against its own measured limit: 1 in flight 0.99 and 0.96 of the limit (the cores 2 %
# idle), 2 in flight 0.83, 0.84 and 0.74 (8-9.5 % idle; the judge's context at 0.67-0.78 of its
# own rate). So, unless the user set them: 1 in flight and a timeout that covers a slow CPU.
EMBEDDED_CONCURRENCY = 1
EMBEDDED_TIMEOUT_S = 1800.0


def client_settings(settings: LLMSettings | None = None) -> LLMSettings:
    """The settings a client uses: as given for a configured endpoint; for the embedded server
    (no base URL), its limits above unless the user set them."""
    settings = settings or LLMSettings()
    if settings.base_url:
        return settings
    # the names the embedded server answers to: it loads the judge too when that is another model
    update: dict = {"model": settings.embedded_model}
    if "judge_model" not in settings.model_fields_set:
        update["judge_model"] = EMBEDDED_JUDGE_MODEL
    if (update.get("judge_model", settings.judge_model) or settings.embedded_model) == settings.embedded_model:
        update["judge_model"] = None  # one model writes and judges
    if "concurrency" not in settings.model_fields_set:
        update["concurrency"] = EMBEDDED_CONCURRENCY
    if settings.adaptive_concurrency is None:
        update["adaptive_concurrency"] = False  # one llama.cpp context: more in flight only queue
    if "timeout_s" not in settings.model_fields_set:
        update["timeout_s"] = EMBEDDED_TIMEOUT_S
    return settings.model_copy(update=update)
