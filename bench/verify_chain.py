"""Benchmark: cost of certauth.verify.verify_client_chain (prints figures; not a test).

Run: ``.venv/bin/python -m bench.verify_chain`` from the checkout.
"""

from __future__ import annotations

import datetime as dt
import timeit

from cryptography.x509.verification import Store

from certauth.pki import build_ca, generate_private_key, issue_certificate
from certauth.verify import verify_client_chain


def main() -> None:
    now = dt.datetime.now(dt.UTC)
    for key_type in ("ec-p256", "rsa-2048"):
        ca_key = generate_private_key(key_type)
        ca = build_ca("bench CA", ca_key)
        leaf = issue_certificate(ca, ca_key, generate_private_key(key_type).public_key(), xmpp_addrs=["a@b"])
        others = [build_ca(f"other {i}", generate_private_key("ec-p256")) for i in range(199)]
        for label, anchors in (
            ("1 anchor, list", [ca]),
            ("200 anchors, list", [ca, *others]),
            ("200 anchors, prebuilt Store", Store([ca, *others])),
        ):
            runs = 2000

            def once(anchors=anchors, leaf=leaf) -> None:
                assert verify_client_chain([leaf], anchors, mode="peer", now=now).ok

            per_call = timeit.timeit(once, number=runs) / runs
            print(f"{key_type:9} {label:28} {per_call * 1e3:.3f} ms per verification")


if __name__ == "__main__":
    main()
