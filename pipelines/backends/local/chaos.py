"""Injected preemptions (``CHAOS``): which trial attempts a lost spot node takes down, and when.

One object per run, shared by the runner of single pods (:mod:`.retry`) and of JobSet gangs
(:mod:`.jobset`): it draws per attempt, and adapts its window to how long trial attempts take.
"""

from __future__ import annotations

import random
from collections.abc import Collection

DEFAULT_CHAOS_WINDOW = 20.0  # seconds: preemptions land in (0.1, 0.9) x this before any trial ends


def chaos_draw(seed: int | None, node: str, attempt: int) -> tuple[float, float]:
    """Two uniform numbers for one attempt: whether it is preempted, and when.

    Seeded per (seed, node, attempt), so a seed gives the same preemptions whatever order the
    parallel steps start in; unseeded, fresh randomness.
    """
    rng = random.Random(f"{seed}:{node}:{attempt}") if seed is not None else random.SystemRandom()
    return rng.random(), rng.random()


class Chaos:
    """The run's preemption injection: ``probability`` per attempt of a trial template.

    Args:
        probability: chance that one attempt of a trial template is preempted.
        seed: seeds the draws (None: fresh randomness).
        window: a preemption lands at (0.1, 0.9) x this many seconds after the attempt starts;
            None: the mean duration of the trial attempts that succeeded so far.
        templates: the trial templates (:func:`.records.trial_templates`), the only ones hit.
    """

    def __init__(
        self,
        probability: float,
        seed: int | None,
        window: float | None,
        templates: Collection[str],
    ) -> None:
        self.probability = probability
        self.seed = seed
        self.window = window
        self.templates = set(templates)
        self.durations: list[float] = []  # of the trial attempts that succeeded

    def applies_to(self, template: str) -> bool:
        """Whether attempts of ``template`` are trials (preemptions land only there)."""
        return template in self.templates

    def record(self, template: str, seconds: float) -> None:
        """A trial attempt of ``template`` succeeded after ``seconds`` (adapts the window)."""
        if self.applies_to(template):
            self.durations.append(seconds)

    def preempt_after(self, template: str, node: str, attempt: int) -> float | None:
        """Seconds after its start at which this attempt is preempted (None: it is not)."""
        if not self.applies_to(template):
            return None
        draw = chaos_draw(self.seed, node, attempt)
        if draw[0] >= self.probability:
            return None
        return (0.1 + 0.8 * draw[1]) * self._window()

    def victim(self, template: str, node: str, launch: int, pods: int) -> tuple[int, float] | None:
        """The pod of a gang a preemption kills in this launch, and when (None: no preemption)."""
        if not self.applies_to(template) or not self.probability:
            return None
        draw = chaos_draw(self.seed, node, launch)
        if draw[0] >= self.probability:
            return None
        which = random.Random(f"{draw[0]}:{draw[1]}").randrange(pods)
        return which, (0.1 + 0.8 * draw[1]) * self._window()

    def _window(self) -> float:
        if self.window is not None:
            return self.window
        seen = self.durations  # adapt to how long a trial attempt has taken so far
        return max(1.0, sum(seen) / len(seen)) if seen else DEFAULT_CHAOS_WINDOW
