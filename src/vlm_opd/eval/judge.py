"""Optional LLM judge: an OpenAI-compatible chat-completions endpoint, called with `urllib`.

MathVista, MathVerse and LogicVista officially read answers with an LLM (GPT-4 / GPT-4o) before their
rule scorers (MathVerse also judges with it), and HallusionBench has GPT-4 judge every answer. With a
`JudgeConfig` the evaluation sends the official prompts (each benchmark's module holds its own) and scores
the replies with the official rules; without one (the default) a documented offline rule stands in and
the items are tagged "offline-rule". Every
judged result records `rule = "judge:<model>"`. Replies are memoised in a JSONL file keyed by model and
prompt, so a resumed evaluation never pays for the same call twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from vlm_opd.errors import ConfigError, VlmOpdError


class JudgeError(VlmOpdError, RuntimeError):
    """The judge endpoint could not be reached or answered something unreadable."""


@dataclass(frozen=True)
class JudgeConfig:
    """Where and how to call the judge.

    Attributes:
        url: base URL of an OpenAI-compatible API (e.g. "https://api.openai.com/v1"), or the full
            ".../chat/completions" endpoint.
        model: model name sent in the request (e.g. "gpt-4o-2024-08-06").
        api_key_env: name of the environment variable holding the API key; None sends no key
            (local servers).
        timeout: seconds per HTTP request.
        max_retries: extra attempts after a failed request (with 1 s, 2 s, ... back-off).
        max_tokens: reply length limit.
    """

    url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 2
    max_tokens: int = 256

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"JudgeConfig.url must start with http:// or https://, got {self.url!r}")
        if not self.model:
            raise ConfigError("JudgeConfig.model must name the judge model")
        if self.timeout <= 0 or self.max_retries < 0 or self.max_tokens < 1:
            raise ConfigError("JudgeConfig: timeout must be > 0, max_retries >= 0, max_tokens >= 1")

    @property
    def endpoint(self) -> str:
        url = self.url.rstrip("/")
        return url if url.endswith("/chat/completions") else url + "/chat/completions"

    @property
    def rule(self) -> str:
        """The label stored with every result this judge scored."""
        return f"judge:{self.model}"


def _warn_plain_http(config: JudgeConfig) -> None:
    """Warn when the API key would travel unencrypted (plain http:// to a host other than this machine)."""
    from urllib.parse import urlsplit

    if not config.api_key_env or not config.url.startswith("http://"):
        return
    host = (urlsplit(config.url).hostname or "").lower()
    if host in ("localhost", "127.0.0.1", "::1") or host.startswith("127."):
        return
    warnings.warn(f"judge: {config.url} is plain http://: the API key in {config.api_key_env} is sent unencrypted "
                  f"to {host}; use https:// (or --judge-key-env none if that server needs no key)", stacklevel=3)


class Judge:
    """Calls the judge with greedy decoding and memoises replies (in memory and, if given, on disk)."""

    def __init__(self, config: JudgeConfig, cache_path: str | Path | None = None):
        self.config = config
        self.cache_path = Path(cache_path) if cache_path else None
        self._memo: dict[str, str] = {}
        self.calls = 0  # HTTP requests that succeeded; tests use it to check memoisation
        _warn_plain_http(config)
        if self.cache_path and self.cache_path.exists():
            for raw in self.cache_path.read_bytes().splitlines():
                try:
                    rec = json.loads(raw.decode("utf-8"))
                    self._memo[rec["key"]] = rec["reply"]
                except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
                    continue  # a torn or damaged line (e.g. an interrupted run): the call is simply redone

    @property
    def rule(self) -> str:
        return self.config.rule

    def _key(self, prompt: str) -> str:
        return hashlib.sha256(f"{self.config.model}\n{prompt}".encode()).hexdigest()

    def complete(self, prompt: str) -> str:
        """The judge's reply to a single user message (temperature 0)."""
        key = self._key(prompt)
        if key in self._memo:
            return self._memo[key]
        reply = self._request(prompt)
        self._memo[key] = reply
        if self.cache_path:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            with self.cache_path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": key, "model": self.config.model, "reply": reply}) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return reply

    def _request(self, prompt: str) -> str:
        cfg = self.config
        headers = {"Content-Type": "application/json"}
        if cfg.api_key_env:
            key = os.environ.get(cfg.api_key_env)
            if not key:
                raise ConfigError(f"judge: environment variable {cfg.api_key_env} (the API key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        body = json.dumps(
            {
                "model": cfg.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0,
                "max_tokens": cfg.max_tokens,
            }
        ).encode()
        last_error: Exception | None = None
        for attempt in range(cfg.max_retries + 1):
            if attempt:
                time.sleep(float(attempt))
            try:
                req = urllib.request.Request(cfg.endpoint, data=body, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=cfg.timeout) as resp:
                    payload = json.loads(resp.read().decode("utf-8"))
                content = payload["choices"][0]["message"]["content"]
                self.calls += 1
                return (content or "").strip()
            except urllib.error.HTTPError as err:
                last_error = err
                if 400 <= err.code < 500 and err.code != 429:
                    break  # a bad request or key will not get better by retrying
            except (urllib.error.URLError, TimeoutError, OSError, ValueError, KeyError, IndexError, TypeError) as err:
                last_error = err
        raise JudgeError(
            f"judge {cfg.model} at {cfg.endpoint} failed after {cfg.max_retries + 1} attempt(s): {last_error}. "
            "Generated completions are cached; rerun the same command to resume."
        )
