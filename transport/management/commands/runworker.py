"""``manage.py runworker <channels>``: channels' command with a worker that outlives a Redis outage.

Production runs ``manage.py runworker xmpp.router`` (DESIGN §1); ``transport.im.service.ResilientWorker``
keeps receiving when Redis comes back instead of ending the process at the first error (issue 16 point 4).
This command wins over channels' own because ``transport`` precedes ``channels`` in ``INSTALLED_APPS``.
"""

from __future__ import annotations

from channels.management.commands.runworker import Command as ChannelsRunworker

from transport.im.service import ResilientWorker
from xmppauth.gcpolicy import settle_heap_for_serving


class Command(ChannelsRunworker):
    worker_class = ResilientWorker

    def handle(self, *args, **options) -> None:
        settle_heap_for_serving()  # the start-up heap out of the collector's way (issue 17)
        super().handle(*args, **options)
