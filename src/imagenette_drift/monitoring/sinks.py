"""Where alert events go: a JSON line on stdout, a webhook, and GitHub's `repository_dispatch`.

The GitHub token comes from the environment (`GITHUB_TOKEN`) only, never from a flag, and is never printed,
logged or written to a report: errors name the repository and the HTTP status, not the request.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from imagenette_drift.monitoring.alerts import AlertEvent

log = logging.getLogger(__name__)
GITHUB_API = "https://api.github.com"
DISPATCH_EVENT = "retrain"
_REPO = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")


class Sink(Protocol):
    """Sends one alert event; failures are logged by the caller and never stop the monitor."""

    name: str

    def send(self, event: AlertEvent, log_location: str) -> None: ...


@dataclass
class StdoutSink:
    """One JSON object per line on stdout (for `jq`, a log shipper, or a shell loop)."""

    stream: TextIO | None = None  # None: whatever sys.stdout is when the event is sent
    name: str = "stdout"

    def send(self, event: AlertEvent, log_location: str) -> None:
        line = json.dumps({**event.to_dict(), "log": log_location})
        print(line, file=self.stream or sys.stdout, flush=True)


def _post_json(url: str, body: dict[str, Any], headers: Mapping[str, str], timeout: float) -> int:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.status


@dataclass
class WebhookSink:
    """POST the event as JSON to `url` (Slack-style incoming webhooks, an alert manager, a function)."""

    url: str
    timeout: float = 10.0
    name: str = "webhook"

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"--webhook must be an http:// or https:// URL, got {self.url!r}.")

    def send(self, event: AlertEvent, log_location: str) -> None:
        _post_json(self.url, {**event.to_dict(), "log": log_location}, {}, self.timeout)


@dataclass
class GitHubDispatchSink:
    """`POST /repos/{owner}/{repo}/dispatches` with event type `retrain` when an alert is raised.

    The payload (`client_payload`) holds the window, its statistics and the log location, which a
    `retrain.yml` workflow (`on: repository_dispatch: types: [retrain]`) reads as
    `github.event.client_payload`. Cleared alerts are not dispatched. `api_url` follows `GITHUB_API_URL`
    (GitHub Enterprise, or a local recorder in tests).
    """

    repo: str
    token: str
    api_url: str = GITHUB_API
    timeout: float = 10.0
    name: str = "github"

    def __post_init__(self) -> None:
        if not _REPO.fullmatch(self.repo):
            raise ValueError(f"--github_repo must be owner/name, got {self.repo!r}.")
        if not self.token:
            raise ValueError(
                "--github_repo needs a token in the GITHUB_TOKEN environment variable (a fine-grained token "
                "with Contents: read and write on the repository); it is never accepted as a flag."
            )

    def __repr__(self) -> str:  # never show the token
        return f"GitHubDispatchSink(repo={self.repo!r}, api_url={self.api_url!r})"

    def send(self, event: AlertEvent, log_location: str) -> None:
        if event.kind != "raised":
            return
        body = {
            "event_type": DISPATCH_EVENT,
            "client_payload": {
                "window": event.window,
                "at": event.at,
                "statistics": event.row,
                "log": log_location,
            },
        }
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self.token}",
            "X-GitHub-Api-Version": "2022-11-28",
            "User-Agent": "imagenette-drift-monitor",
        }
        try:
            status = _post_json(
                f"{self.api_url.rstrip('/')}/repos/{self.repo}/dispatches", body, headers, self.timeout
            )
        except urllib.error.HTTPError as e:
            raise RuntimeError(
                f"GitHub refused repository_dispatch to {self.repo} with HTTP {e.code}: check that the token in "
                "GITHUB_TOKEN can write to the repository's contents."
            ) from None
        if status != 204:
            raise RuntimeError(f"repository_dispatch to {self.repo} answered HTTP {status}, expected 204.")


def build_sinks(
    webhook: str | None, github_repo: str | None, environ: Mapping[str, str] = os.environ
) -> list[Sink]:
    """The stdout sink, plus a webhook and GitHub dispatch when asked for (token from `environ` only)."""
    sinks: list[Sink] = [StdoutSink()]
    if webhook:
        sinks.append(WebhookSink(webhook))
    if github_repo:
        sinks.append(
            GitHubDispatchSink(
                github_repo, environ.get("GITHUB_TOKEN", ""), environ.get("GITHUB_API_URL") or GITHUB_API
            )
        )
    return sinks


def deliver(sinks: list[Sink], event: AlertEvent, log_location: str) -> list[str]:
    """Send `event` to every sink; return one message per failed sink (the monitor carries on)."""
    failures = []
    for sink in sinks:
        try:
            sink.send(event, log_location)
        except (OSError, RuntimeError, ValueError) as e:
            message = f"alert sink {sink.name} failed: {e}"
            log.warning(message)
            failures.append(message)
    return failures
