"""The operator's overview, the admin's index: who is logged in, how logins go, CA and CRL health, what
expires soon, what was revoked lately.

Every query is an aggregate or a bounded slice (a fixed number of rows whatever the size of the tables), so
the page costs the same with ten accounts or a million auth events. Charts are small SVG drawn here, on the
server: no JavaScript, no CDN.

Part of the composition root (docs/ARCHITECTURE.md, with ``urls.py`` and ``asgi.py``): the one page about all
three apps, so it imports them; nothing outside the root imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count
from django.db.models.functions import TruncMinute
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from accounts.models import Account
from certauth.admin import revocation_overview
from certauth.models import AuthEvent, Certificate, CertificateAuthority
from transport.sessions.models import LiveSession
from xmppauth import limits

CHART_HOURS = 3  # logins per minute over this many hours
FAILURE_HOURS = 24  # failures grouped by reason over this many hours
LIST_LIMIT = 15
CHART_WIDTH, CHART_HEIGHT, BAR = 720, 120, 4  # one BAR-wide column per minute: 180 * 4 = 720


@dataclass(frozen=True)
class Count_:
    label: str
    count: int


@dataclass(frozen=True)
class CaHealth:
    ca: CertificateAuthority
    sources: str
    crl_held: str
    last_fetch: datetime | None
    next_update: datetime | None
    freshness: str
    fresh: bool


@dataclass(frozen=True)
class Dashboard:
    now: datetime
    accounts: int
    active_certificates: int
    sessions_total: int
    sessions_by_transport: list[Count_]
    sessions_by_process: list[Count_]
    logins_chart: SafeString
    logins_total: int
    failures_total: int
    failures_by_reason: list[tuple[str, str, int]]  # condition, reason, count
    cas: list[CaHealth]
    expiring: list[Certificate]
    expiring_total: int
    revocations: list[Certificate]
    chart_hours: int = CHART_HOURS
    failure_hours: int = FAILURE_HOURS
    expiry_days: int = 30


def minute_chart(counts: dict[tuple[datetime, str], int], start: datetime, minutes: int) -> SafeString:
    """Stacked bars, one per minute from ``start``: successes (green) under failures (red), hourly grid."""
    per_minute = [
        (
            counts.get((start + timedelta(minutes=i), "success"), 0),
            counts.get((start + timedelta(minutes=i), "failure"), 0),
        )
        for i in range(minutes)
    ]
    peak = max((ok + bad for ok, bad in per_minute), default=0) or 1
    scale = (CHART_HEIGHT - 14) / peak
    bars: list[tuple[object, ...]] = []
    for i, (ok, bad) in enumerate(per_minute):
        x = i * BAR
        ok_h, bad_h = round(ok * scale, 1), round(bad * scale, 1)
        if ok:
            bars.append(
                (x, CHART_HEIGHT - ok_h, ok_h, "#1a7f37", f"{start + timedelta(minutes=i):%H:%M} {ok} ok")
            )
        if bad:
            y = CHART_HEIGHT - ok_h - bad_h
            bars.append((x, y, bad_h, "#cf222e", f"{start + timedelta(minutes=i):%H:%M} {bad} failed"))
    grid = format_html_join(
        "",
        '<line x1="{0}" y1="0" x2="{0}" y2="{1}" stroke="#8888" stroke-width="0.5"/>'
        '<text x="{2}" y="10" font-size="9" fill="currentColor">{3}</text>',
        (
            (i * BAR, CHART_HEIGHT, i * BAR + 2, f"{start + timedelta(minutes=i):%H:%M}")
            for i in range(0, minutes, 60)
        ),
    )
    rects = format_html_join(
        "",
        '<rect x="{}" y="{}" width="' + str(BAR - 1) + '" height="{}" fill="{}"><title>{}</title></rect>',
        bars,
    )
    return format_html(
        '<svg class="xa-chart" role="img" aria-label="logins per minute, peak {}" width="{}" height="{}" '
        'viewBox="0 0 {} {}" xmlns="http://www.w3.org/2000/svg">{}{}'
        '<text x="{}" y="10" font-size="9" text-anchor="end" fill="currentColor">peak {}/min</text></svg>',
        peak,
        CHART_WIDTH,
        CHART_HEIGHT,
        CHART_WIDTH,
        CHART_HEIGHT,
        grid,
        rects,
        CHART_WIDTH - 2,
        peak,
    )


def _ca_health(now: datetime) -> list[CaHealth]:
    cas = (
        CertificateAuthority.objects.filter(trusted_for_client_auth=True)
        .prefetch_related("crl_sources")
        .order_by("name")[:LIST_LIMIT]
    )
    rows = []
    for ca in cas:
        overview = revocation_overview(ca, now)
        fetches = [s.last_success_at for s in ca.crl_sources.all() if s.last_success_at is not None]
        last_fetch = ca.crl_updated_at if ca.is_ours else max(fetches, default=None)
        fresh = overview.freshness.startswith("fresh")
        rows.append(
            CaHealth(
                ca,
                overview.sources,
                overview.crl_held,
                last_fetch,
                overview.next_update,
                overview.freshness,
                fresh,
            )
        )
    return rows


def collect(now: datetime | None = None) -> Dashboard:
    now = now or timezone.now()
    live = LiveSession.objects.filter(lease_expires_at__gte=now)
    labels = dict(LiveSession.Transport.choices)
    by_transport = [
        Count_(labels.get(row["transport"], row["transport"]), row["n"])
        for row in live.values("transport").annotate(n=Count("id")).order_by("-n", "transport")
    ]
    by_process = [
        Count_(row["process_id"], row["n"])
        for row in live.values("process_id").annotate(n=Count("id")).order_by("-n", "process_id")[:LIST_LIMIT]
    ]
    start = (now - timedelta(hours=CHART_HOURS)).replace(second=0, microsecond=0) + timedelta(minutes=1)
    per_minute = (
        AuthEvent.objects.filter(time__gte=start)
        .annotate(minute=TruncMinute("time"))
        .values("minute", "outcome")
        .annotate(n=Count("id"))
    )
    counts = {(row["minute"], row["outcome"]): row["n"] for row in per_minute}
    failures = (
        AuthEvent.objects.filter(
            time__gte=now - timedelta(hours=FAILURE_HOURS), outcome=AuthEvent.Outcome.FAILURE
        )
        .values("condition", "reason")
        .annotate(n=Count("id"))
        .order_by("-n", "condition", "reason")[:LIST_LIMIT]
    )
    expiry_days = limits.option("certificate_expiry_warning_days")  # the window of the warning job
    expiring = Certificate.objects.expiring(now, expiry_days)
    revoked = Certificate.objects.exclude(status=Certificate.Status.ACTIVE).exclude(revoked_at=None)
    return Dashboard(
        now=now,
        accounts=Account.objects.count(),
        active_certificates=Certificate.objects.filter(
            status=Certificate.Status.ACTIVE, not_after__gte=now
        ).count(),
        sessions_total=sum(c.count for c in by_transport),
        sessions_by_transport=by_transport,
        sessions_by_process=by_process,
        logins_chart=minute_chart(counts, start, CHART_HOURS * 60),
        logins_total=sum(n for (_, outcome), n in counts.items() if outcome == "success"),
        failures_total=sum(n for (_, outcome), n in counts.items() if outcome == "failure"),
        failures_by_reason=[(row["condition"], row["reason"], row["n"]) for row in failures],
        cas=_ca_health(now),
        expiring=list(expiring.select_related("account__domain").order_by("not_after")[:LIST_LIMIT]),
        expiring_total=expiring.count(),
        revocations=list(revoked.select_related("account__domain").order_by("-revoked_at")[:LIST_LIMIT]),
        expiry_days=expiry_days,
    )
