"""Who is calling, as the job service sees it: the owner of the jobs it makes, and its key (if any).

Here rather than in api/auth (which finds the caller from a request) so that the service depends on
no HTTP module: api -> service, never back.
"""

from __future__ import annotations

from dataclasses import dataclass

from kandinsky_serve.auth.keys import ApiKey


@dataclass(frozen=True)
class Caller:
    owner: str  # owns the jobs it creates; no other caller can see them
    key: ApiKey | None  # None: the keyless local user
