"""A template's ``parallelism`` as Argo's controller applies it: at most ``n`` children run, and
they start in the order the children were created (item 0 before item 1), whatever order their
threads reach the gate in. A plain semaphore lets a later item overtake an earlier one on a busy
machine, so a sweep with ``parallelism: 1`` would run its trials out of the plan's order.
"""

from __future__ import annotations

import bisect
import itertools
import threading


class OrderedSlots:
    """``n`` slots handed out in ticket order: take a ticket when the child is created, then
    :meth:`acquire` with it (or :meth:`cancel` it if the child never runs)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.running = 0
        self._waiting: list[int] = []  # tickets not yet admitted, in order
        self._next = itertools.count()
        self._cond = threading.Condition()

    def ticket(self) -> int:
        with self._cond:
            t = next(self._next)
            bisect.insort(self._waiting, t)
            return t

    def acquire(self, ticket: int) -> None:
        """Wait until every earlier ticket was admitted or cancelled and a slot is free."""
        with self._cond:
            while not (self.running < self.n and self._waiting[0] == ticket):
                self._cond.wait()
            self._waiting.pop(0)
            self.running += 1
            self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            self.running -= 1
            self._cond.notify_all()

    def cancel(self, ticket: int) -> None:
        """A ticket whose child will not run (skipped, failed before it ran)."""
        with self._cond:
            if ticket in self._waiting:
                self._waiting.remove(ticket)
                self._cond.notify_all()
