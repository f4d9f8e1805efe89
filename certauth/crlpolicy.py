"""When to fetch a CRL source next, and from when it counts as stale: pure rules, no I/O, no database.

Spec: RFC 5280 §5.1.2.4-§5.1.2.5 (thisUpdate, nextUpdate: a new CRL is due by nextUpdate) and DESIGN §5
(refresh before nextUpdate; past nextUpdate plus grace, fail closed unless the operator chose fail-open).

Schedule, after a good fetch: half the time left to nextUpdate, clamped to ``[min, max]``
(``crl_refresh_min_seconds`` / ``crl_refresh_max_seconds``; max is at most hourly by default), or the
operator's ``refresh_interval_seconds`` (never below min). After a failure: ``min * 2**(failures - 1)``,
clamped to the same bounds, so a dead server is not hammered and a flapping one is retried soon.

Staleness of one source, decided here and applied by ``certauth.revocation``:

- a source with a CRL held is stale from ``nextUpdate + grace`` on (the date shown is its nextUpdate);
- a source that never gave a good CRL is stale only once its fetches have been failing for longer than the
  grace (from ``failing_since``): a CA whose sources were simply not tried yet (state ``never``) is not
  refused, but one whose only distribution point is dead does not stay open forever;
- a source without a nextUpdate in its CRL (allowed by X.509, forbidden by RFC 5280 §5.1.2.5) never goes
  stale by date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

NEXT_UPDATE = "nextUpdate"
NEVER_FETCHED = "never fetched"


@dataclass(frozen=True)
class Bounds:
    """``crl_refresh_min_seconds`` and ``crl_refresh_max_seconds`` of the config."""

    min_seconds: int
    max_seconds: int

    def clamp(self, seconds: float) -> float:
        return min(max(seconds, self.min_seconds), self.max_seconds)


def next_refresh_after_success(
    now: datetime, next_update: datetime | None, bounds: Bounds, override_seconds: int | None = None
) -> datetime:
    """When to fetch again after a good CRL whose nextUpdate is ``next_update``."""
    if override_seconds:
        return now + timedelta(seconds=max(override_seconds, bounds.min_seconds))
    if next_update is None:
        return now + timedelta(seconds=bounds.max_seconds)
    half = (next_update - now).total_seconds() / 2  # RFC 5280 §5.1.2.5: the next CRL is out by nextUpdate
    return now + timedelta(seconds=bounds.clamp(half))


def next_refresh_after_failure(
    now: datetime, failures: int, bounds: Bounds, override_seconds: int | None = None
) -> datetime:
    """When to retry after the ``failures``-th failure in a row (exponential backoff within the bounds)."""
    backoff = float(bounds.min_seconds) * 2 ** min(max(failures - 1, 0), 32)
    if override_seconds:
        backoff = min(backoff, override_seconds)
    return now + timedelta(seconds=bounds.clamp(backoff))


@dataclass(frozen=True)
class Staleness:
    """A source that blocks its CA: ``since`` is the date to show, ``what`` says which date it is."""

    since: datetime
    what: str


def staleness(
    now: datetime, *, next_update: datetime | None, failing_since: datetime | None, grace: timedelta
) -> Staleness | None:
    """``None`` while the source does not block its CA, else since when it is stale (see the docstring)."""
    if next_update is not None:
        return Staleness(next_update, NEXT_UPDATE) if now > next_update + grace else None
    if failing_since is not None and now > failing_since + grace:
        return Staleness(failing_since, NEVER_FETCHED)
    return None


def is_fresh(now: datetime, *, next_update: datetime | None, has_crl: bool, grace: timedelta) -> bool:
    """Whether the source holds a CRL that still counts (one such source is enough for its CA)."""
    return has_crl and (next_update is None or now <= next_update + grace)
