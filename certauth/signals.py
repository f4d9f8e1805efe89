"""Signals of the revocation machinery that other parts (live sessions) listen to.

``certauth.services.certificate_invalidated`` covers our own revocations; this module the external ones.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent (after commit) when a CRL fetched for an external CA lists serials that its previous CRLs did not.
# kwargs: ca (CertificateAuthority), serials (tuple of lower-case hex strings without leading zeros, the
# form of Certificate.serial and CertFacts.serial), source (CrlSource). Sender: CrlSource.
# On the first CRL of a CA every listed serial is new. Receivers close live sessions whose certificate was
# issued by ``ca`` and has one of ``serials`` (RFC 6120 §13.7.2.3).
external_revocations_found = Signal()
