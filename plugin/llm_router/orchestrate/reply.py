"""What an orchestration hands back to the adapter: one complete HTTP answer."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class OrchestratedReply:
    """Status, headers and body for the client; every upstream call behind it is already accounted."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    model: str | None = None  # the model whose answer this is (None for an error)
    steps: list[str] = field(default_factory=list)  # what happened, one entry per model tried

    def header(self, name: str) -> str | None:
        """A header value by (lower-case) name."""
        return next((v for n, v in self.headers if n == name), None)
