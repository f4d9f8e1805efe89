"""certauth.crlpolicy: when to fetch next, and when a source is stale (RFC 5280 §5.1.2.5; DESIGN §5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from certauth.crlpolicy import (
    NEVER_FETCHED,
    NEXT_UPDATE,
    Bounds,
    Staleness,
    is_fresh,
    next_refresh_after_failure,
    next_refresh_after_success,
    staleness,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
BOUNDS = Bounds(min_seconds=60, max_seconds=3600)
GRACE = timedelta(hours=1)


def seconds_after_success(next_update: datetime | None, override: int | None = None) -> float:
    return (next_refresh_after_success(NOW, next_update, BOUNDS, override) - NOW).total_seconds()


def test_refresh_at_half_the_time_to_next_update():
    assert seconds_after_success(NOW + timedelta(minutes=40)) == 1200


def test_refresh_at_least_hourly_however_far_next_update_is():
    assert seconds_after_success(NOW + timedelta(days=7)) == 3600


def test_refresh_no_sooner_than_the_minimum_when_next_update_is_near_or_past():
    assert seconds_after_success(NOW + timedelta(seconds=30)) == 60
    assert seconds_after_success(NOW - timedelta(hours=1)) == 60


def test_crl_without_next_update_is_refreshed_at_the_maximum():
    assert seconds_after_success(None) == 3600


def test_operator_interval_overrides_the_half_time_rule():
    assert seconds_after_success(NOW + timedelta(minutes=40), override=7200) == 7200


def test_operator_interval_is_never_below_the_minimum():
    assert seconds_after_success(NOW + timedelta(minutes=40), override=5) == 60


def test_failures_back_off_from_the_minimum_to_the_maximum():
    delays = [(next_refresh_after_failure(NOW, n, BOUNDS) - NOW).total_seconds() for n in range(1, 9)]
    assert delays == [60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_backoff_survives_a_very_long_failure_run():
    assert next_refresh_after_failure(NOW, 10_000, BOUNDS) == NOW + timedelta(hours=1)


def test_backoff_is_capped_by_the_operator_interval():
    assert next_refresh_after_failure(NOW, 5, BOUNDS, override_seconds=300) == NOW + timedelta(seconds=300)


def test_crl_past_next_update_plus_grace_is_stale_since_next_update():
    next_update = NOW - timedelta(hours=1, seconds=1)
    assert staleness(NOW, next_update=next_update, failing_since=None, grace=GRACE) == Staleness(
        next_update, NEXT_UPDATE
    )


def test_crl_within_grace_is_not_stale():
    assert staleness(NOW, next_update=NOW - timedelta(hours=1), failing_since=None, grace=GRACE) is None


def test_never_fetched_source_is_stale_only_after_failing_past_grace():
    since = NOW - timedelta(hours=2)
    expected = Staleness(since, NEVER_FETCHED)
    assert staleness(NOW, next_update=None, failing_since=since, grace=GRACE) == expected
    assert staleness(NOW, next_update=None, failing_since=NOW - timedelta(minutes=5), grace=GRACE) is None
    assert staleness(NOW, next_update=None, failing_since=None, grace=GRACE) is None


def test_fresh_means_a_crl_held_within_next_update_plus_grace():
    assert is_fresh(NOW, next_update=NOW + timedelta(days=1), has_crl=True, grace=GRACE)
    assert is_fresh(NOW, next_update=None, has_crl=True, grace=GRACE)
    assert not is_fresh(NOW, next_update=NOW - timedelta(hours=2), has_crl=True, grace=GRACE)
    assert not is_fresh(NOW, next_update=None, has_crl=False, grace=GRACE)
