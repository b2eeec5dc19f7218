"""Free slots: the hierarchy of ``trio.CapacityLimiter``s, and the dispatcher's doorbell.

One limiter is global, one per call class. The dispatcher counts free slots
(:meth:`Slots.free`) before it claims, and takes a token from both limiters on behalf
of each call it starts (:meth:`Slots.take`), so nothing ever waits while holding a
token. The call's task gives the tokens back (:meth:`Slots.give_back`), which rings the
:class:`Doorbell` when a full limiter got room: that is how a freed slot wakes the
dispatcher without the call's task knowing the dispatcher.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Final

import trio

#: Most calls claimed in one store round trip.
MAX_CLAIM_BATCH: Final = 512


class Doorbell:
    """Wakes the dispatcher: a call was scheduled, or a slot freed. (Shutdown does not
    ring: it cancels the dispatcher's scope.)"""

    def __init__(self) -> None:
        self._event = trio.Event()
        #: True from :meth:`arm` until :meth:`sleep`: the dispatcher is in a round.
        self.awake = True
        #: Ring on every slot freed, not only on a full limiter's (set while the
        #: dispatcher waits for calls' writes to end: see ``Dispatcher.run``).
        self.on_every_release = False
        self._sleep_until: datetime | None = None

    def ring(self) -> None:
        self._event.set()

    def on_scheduled(self, due_at: datetime) -> None:
        """A store listener: calls due at ``due_at`` were scheduled (here or elsewhere).

        Rings only when it changes what the dispatcher waits for.
        """
        if self.awake or self._sleep_until is None or due_at < self._sleep_until:
            self._event.set()

    def arm(self) -> None:
        """Start a round: a ring from now on ends the next :meth:`sleep` at once."""
        self._event = trio.Event()
        self.awake = True
        self.on_every_release = False

    async def sleep(self, deadline: float, next_due: datetime | None) -> None:
        """Sleep until ``deadline`` (Trio time) or a ring; ``next_due`` is what we await."""
        self._sleep_until = next_due
        self.awake = False
        with trio.move_on_at(deadline):
            await self._event.wait()


class Slots:
    """The global limiter and one limiter per class, with the doorbell they ring."""

    def __init__(
        self,
        global_limit: int | None,
        class_limits: Mapping[str, int | None],
        *,
        max_batch: int = MAX_CLAIM_BATCH,
        ring_on_every_release: bool = False,
    ) -> None:
        self.doorbell = Doorbell()
        self._global = trio.CapacityLimiter(_tokens(global_limit))
        self._classes = {
            name: trio.CapacityLimiter(_tokens(limit)) for name, limit in class_limits.items()
        }
        self._max_batch = max_batch
        # Run-once mode must look again whenever a call ends, to see when it is done.
        self._ring_always = ring_on_every_release

    def free(self) -> tuple[int, dict[str, int]]:
        """(calls that may start now in all, {name: calls of that class that may start}).

        Both are capped at ``max_batch``; names with no free slot are left out.
        """
        free_global = self._global.available_tokens
        limit = self._max_batch if free_global >= self._max_batch else int(free_global)
        slots = {}
        if limit > 0:
            for name, limiter in self._classes.items():
                free = limiter.available_tokens
                if free >= 1:
                    slots[name] = limit if free >= limit else int(free)
        return limit, slots

    def take(self, name: str) -> Ticket:
        """Take a global and a class token for one call; return what gives them back.

        Only for slots counted free by :meth:`free` since the last ``await``: then this
        cannot fail.
        """
        limiter = self._classes[name]
        borrower = object()
        self._global.acquire_on_behalf_of_nowait(borrower)
        try:
            limiter.acquire_on_behalf_of_nowait(borrower)
        except BaseException:
            self._global.release_on_behalf_of(borrower)
            raise
        return limiter, borrower

    def give_back(self, ticket: Ticket) -> None:
        """Return the call's tokens; ring the doorbell if the dispatcher must look again.

        It must when a full limiter got room (it sleeps without waiting for that
        class), and when it is in a round: the free slots it counted before its claim
        are stale, and the claim's answer does not cover this one.
        """
        limiter, borrower = ticket
        glob, doorbell = self._global, self.doorbell
        ring = (
            doorbell.awake
            or doorbell.on_every_release
            or self._ring_always
            or glob.available_tokens < 1
            or limiter.available_tokens < 1
        )
        limiter.release_on_behalf_of(borrower)
        glob.release_on_behalf_of(borrower)
        if ring:
            doorbell.ring()

    def set_limit(self, name: str | None, limit: int | None) -> None:
        """Change the global limit (``name`` None) or class ``name``'s; None: unlimited.

        Lowering it below the calls running stops none of them: no call starts until
        fewer run than the new limit. Rings the doorbell, so that slots a raise
        freed fill at once.
        """
        limiter = self._global if name is None else self._classes[name]
        limiter.total_tokens = _tokens(limit)
        self.doorbell.ring()

    def limit(self, name: str | None) -> int | None:
        """The global limit (``name`` None) or class ``name``'s now; None: unlimited."""
        limiter = self._global if name is None else self._classes[name]
        total = limiter.total_tokens
        return None if total == math.inf else int(total)

    @property
    def busy(self) -> bool:
        """True while any call holds tokens (from its start until its writes are done,
        or until an at-least-once success's completion is sent)."""
        return self._global.borrowed_tokens > 0

    @property
    def held(self) -> int:
        """Calls holding tokens."""
        return int(self._global.borrowed_tokens)

    def running(self, name: str) -> int:
        """Tokens of class ``name`` in use (its calls running)."""
        return int(self._classes[name].borrowed_tokens)


#: One call's hold on its two tokens: its class limiter, and the borrower both tokens
#: were taken for (a plain tuple: built for every call).
Ticket = tuple[trio.CapacityLimiter, object]


def _tokens(limit: int | None) -> float:
    return math.inf if limit is None else limit
