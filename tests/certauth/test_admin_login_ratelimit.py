"""Failed admin logins are rate-limited per source address and per username (issue 12 §11, django-axes)."""

from __future__ import annotations

import pytest
from django.conf import settings

pytestmark = pytest.mark.django_db

PASSWORD = "operator-password-1"
LIMIT = settings.AXES_FAILURE_LIMIT


@pytest.fixture
def operator(django_user_model):
    return django_user_model.objects.create_superuser(username="operator", email="", password=PASSWORD)


def login(client, username: str, password: str, address: str):
    data = {"username": username, "password": password, "next": "/admin/"}
    return client.post("/admin/login/", data, REMOTE_ADDR=address)


def logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_fewer_failures_than_the_limit_still_let_the_right_password_in(client, operator):
    for _ in range(LIMIT - 1):
        assert login(client, "operator", "wrong", "10.0.0.1").status_code == 200  # the form again
    response = login(client, "operator", PASSWORD, "10.0.0.1")
    assert response.status_code == 302 and response["Location"] == "/admin/"
    assert logged_in(client)


def test_the_limit_of_failures_from_one_address_locks_that_address(client, operator):
    for index in range(LIMIT):
        login(client, f"guess{index}", "wrong", "10.0.0.2")  # other usernames: the address is what repeats
    response = login(client, "operator", PASSWORD, "10.0.0.2")
    assert response.status_code == 429
    assert not logged_in(client)
    other = login(client, "operator", PASSWORD, "10.0.0.3")  # another address is not locked by it
    assert other.status_code == 302 and logged_in(client)


def test_the_limit_of_failures_for_one_username_locks_it_from_every_address(client, operator):
    for index in range(LIMIT):
        login(client, "operator", "wrong", f"10.0.1.{index + 1}")  # spread over addresses
    response = login(client, "operator", PASSWORD, "10.0.2.1")
    assert response.status_code == 429
    assert not logged_in(client)
