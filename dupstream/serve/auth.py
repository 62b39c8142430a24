"""Bearer tokens, each bound to a tenant and optionally to reference banks.

Tokens are compared in constant time and never logged; a ``Grant`` (what a token may see) is
what the routes get.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass

from dupstream.serve.errors import RequestError


@dataclass(frozen=True)
class Grant:
    tenant: str
    #: banks it may match against and write to; None: every bank
    banks: frozenset[str] | None = None

    def may_use_bank(self, bank: str) -> bool:
        return self.banks is None or bank in self.banks

    def banks_for(self, requested: list[str] | None) -> frozenset[str] | None:
        """The banks a lookup matches against: the requested ones (each must be granted), or
        every granted one."""
        if requested is None:
            return self.banks
        for bank in requested:
            if not self.may_use_bank(bank):
                raise RequestError(f"this token may not use bank {bank!r}",
                                   reason="bank_forbidden")
        return frozenset(requested)


class TokenTable:
    def __init__(self, tokens: Iterable[tuple[str, Grant]]) -> None:
        self._tokens = [(t.encode(), g) for t, g in tokens if t]

    def __len__(self) -> int:
        return len(self._tokens)

    def check(self, authorization: str | None) -> Grant:
        """The grant of an ``Authorization: Bearer <token>`` header (``auth_missing`` /
        ``auth_invalid`` otherwise)."""
        if not authorization:
            raise RequestError("an Authorization: Bearer <token> header is required",
                               reason="auth_missing")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RequestError("the Authorization header must be 'Bearer <token>'",
                               reason="auth_missing")
        given = token.strip().encode()
        found = None
        for known, grant in self._tokens:  # every token compared: no timing hint
            if hmac.compare_digest(known, given):
                found = grant
        if found is None:
            raise RequestError("unknown token", reason="auth_invalid")
        return found
