"""The one exception the client raises for anything the server (or the way to it) refused."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    """A refused request, a failed job or an unreachable server.

    `problem` is the server's RFC 9457 problem+json body (type, title, status, detail, and
    members some errors add: `errors` for invalid fields, `violations` for a dataset that
    breaks its schema, `request_id` to find the request in the server's logs). Errors the
    client meets on its own (no connection, a job that failed) carry a problem of the same
    shape, with `status` None.
    """

    def __init__(self, problem: Mapping[str, Any], response: httpx.Response | None = None):
        self.problem: dict[str, Any] = dict(problem)
        self.response = response
        super().__init__(str(self))

    @property
    def status(self) -> int | None:
        """The HTTP status (None when there was no HTTP answer)."""
        status = self.problem.get("status")
        return status if isinstance(status, int) else None

    @property
    def title(self) -> str:
        return str(self.problem.get("title") or "Error")

    @property
    def detail(self) -> str:
        """The server's one-sentence explanation, naming the thing and the fix."""
        return str(self.problem.get("detail") or "")

    def __str__(self) -> str:
        head = f"{self.status} {self.title}" if self.status is not None else self.title
        return f"{head}: {self.detail}" if self.detail else head

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        """The problem a non-2xx RESPONSE holds (or one made from it when a proxy in between
        answered with something else)."""
        media = response.headers.get("content-type", "").partition(";")[0].strip()
        if media in (PROBLEM_JSON, "application/json"):
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and "detail" in body:
                body.setdefault("status", response.status_code)
                if not isinstance(body["detail"], str):  # another server's JSON error
                    body["detail"] = str(body["detail"])
                return cls(body, response)
        text = " ".join(response.text.split())[:200]
        detail = text or f"{response.request.method} {response.request.url} was refused."
        return cls(
            {"title": response.reason_phrase, "status": response.status_code, "detail": detail},
            response,
        )


def unreachable(url: str, exc: httpx.TransportError) -> ApiError:
    """An ApiError for a request that got no answer at all."""
    reason = str(exc) or type(exc).__name__
    return ApiError(
        {
            "title": "Server unreachable",
            "status": None,
            "detail": f"No answer from {url} ({reason}); check the URL and that the server runs.",
        }
    )
