"""The one error a caller catches: what the server said (its code, the field it names, its message), or why it could not
be reached."""

from __future__ import annotations

from typing import Any


class KilnError(Exception):
    def __init__(self, message: str, *, code: str = "error", field: str | None = None, status: int | None = None,
                 details: list[dict[str, Any]] | None = None) -> None:  # fmt: skip
        super().__init__(message)
        self.message, self.code, self.field, self.status, self.details = message, code, field, status, details or []

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        more = "".join(f"\n  {d.get('field')}: {d.get('message')}" for d in self.details)
        return f"{self.message}{where}{more}"

    @classmethod
    def of(cls, status: int, body: Any) -> KilnError:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return cls(f"HTTP {status}: {str(body)[:200]}", code="http_error", status=status)
        return cls(str(error.get("message", f"HTTP {status}")), code=str(error.get("code", "error")), field=error.get("field"),
                   status=status, details=error.get("details"))  # fmt: skip
