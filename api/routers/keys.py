"""`/v1/whoami`: the key a request was made with, so a client (the web UI) offers only what its scopes allow."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from services.usecases.keys import SCOPES

router = APIRouter(prefix="/v1", tags=["keys"])


class KeyPublic(BaseModel):
    name: str | None = Field(description="The key's name; none when authentication is off.")
    scopes: list[str] = Field(description="What the key may do: read, predict, train, admin (admin may do anything).")
    auth_disabled: bool = Field(default=False, description="KILN_AUTH_DISABLED is set: every request may do anything.")


@router.get("/whoami", response_model=KeyPublic)
def read_whoami(request: Request) -> KeyPublic:
    """The calling key's name and scopes (any valid key may ask)."""
    if "kiln.key" not in request.scope:  # the gate let it through without a key: authentication is off
        return KeyPublic(name=None, scopes=list(SCOPES), auth_disabled=True)
    scopes = list(request.scope.get("kiln.scopes", ()))
    return KeyPublic(name=request.scope["kiln.key"], scopes=list(SCOPES) if "admin" in scopes else scopes)
