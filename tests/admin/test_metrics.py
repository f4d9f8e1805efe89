"""Issue 18 point 8: the Prometheus endpoint (``[xmppauth] metrics_path``), for active staff users only.

Anonymous requests get 401 with a Basic challenge, a wrong password 401, a non-staff user 403; a staff
user's admin session or Basic credentials get the exposition. The counters come from where the facts are
recorded (the authenticator's auth events, the session bridge), the gauges from the database at scrape time.
Real logins counted across processes: ``tests/transport/test_metrics_processes.py``.
"""

from __future__ import annotations

import base64

import pytest
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from transport.sessions import terminations as sessions
from xmppauth import metrics

pytestmark = pytest.mark.django_db
URL = "/metrics"


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def basic(username: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"HTTP_AUTHORIZATION": f"Basic {token}"}


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user(username="ops", password="pw-ops-metrics-1", is_staff=True)


def test_anonymous_gets_401_with_a_basic_challenge():
    response = Client().get(URL)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Basic realm="xmppauth metrics"')
    assert b"xmppauth_" not in response.content


def test_a_wrong_password_gets_401(staff):
    assert Client().get(URL, **basic("ops", "not-the-password")).status_code == 401
    assert Client().get(URL, HTTP_AUTHORIZATION="Basic !!!").status_code == 401


def test_a_user_who_is_not_staff_gets_403(django_user_model, user_client):
    django_user_model.objects.create_user(username="someone-else", password="pw-someone-else-1")
    assert Client().get(URL, **basic("someone-else", "pw-someone-else-1")).status_code == 403
    assert user_client.get(URL).status_code == 403


def test_an_inactive_staff_user_is_refused(staff):
    staff.is_active = False
    staff.save()
    assert Client().get(URL, **basic("ops", "pw-ops-metrics-1")).status_code == 401


def test_staff_basic_credentials_and_admin_session_get_the_exposition(staff):
    response = Client().get(URL, **basic("ops", "pw-ops-metrics-1"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    assert b"# TYPE xmppauth_live_sessions gauge" in response.content
    session = Client()
    session.force_login(staff)
    assert session.get(URL).status_code == 200


def test_login_counters_by_transport_outcome_and_condition(staff):
    key_ok = ("xmppauth_logins_total", (("condition", ""), ("outcome", "success"), ("transport", "bosh")))
    key_bad = (
        "xmppauth_logins_total",
        (("condition", "not-authorized"), ("outcome", "failure"), ("transport", "bosh")),
    )
    key_cert = (
        "xmppauth_logins_total",
        (("condition", "certificate"), ("outcome", "failure"), ("transport", "bosh")),
    )
    before = samples(Client().get(URL, **basic("ops", "pw-ops-metrics-1")).content)
    metrics.count_login("bosh", True, None)
    metrics.count_login("bosh", False, "not-authorized")
    metrics.count_login("bosh", False, None)
    after = samples(Client().get(URL, **basic("ops", "pw-ops-metrics-1")).content)
    for key in (key_ok, key_bad, key_cert):
        assert after[key] == before.get(key, 0) + 1


def test_live_sessions_and_crl_gauges_come_from_the_database(staff, our_ca):
    for jid, transport, process in (("a", "websocket", "p1"), ("b", "websocket", "p1"), ("c", "tcp", "p2")):
        facts = sessions.SessionFacts(full_jid=f"{jid}@localhost/r", transport=transport)
        sessions.save_session(facts, process=process)
    got = samples(Client().get(URL, **basic("ops", "pw-ops-metrics-1")).content)
    assert got[("xmppauth_live_sessions", (("process", "p1"), ("transport", "websocket")))] == 2
    assert got[("xmppauth_live_sessions", (("process", "p2"), ("transport", "tcp")))] == 1
    assert got[("xmppauth_crl_fresh", (("ca", "Test CA"),))] == 1
    assert 0 <= got[("xmppauth_crl_age_seconds", (("ca", "Test CA"),))] < 60
    assert got[("xmppauth_crl_next_update_seconds", (("ca", "Test CA"),))] > 0
