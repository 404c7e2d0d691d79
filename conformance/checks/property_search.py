"""Property search: Hypothesis looks for a value on which a property fails, and shrinks it.

The property checks (inputs drawn from a case's input space, generated models)
hand `search` a strategy and a function that says what fails on one value. A
profile bounds the search: how many examples, how long before the first
failure, and how long shrinking may take after it. Examples past the time
budget are not run, so a cell's time stays bounded on any machine; the record
says how many examples ran.
"""
from __future__ import annotations

import dataclasses
import random
import time
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Profile:
    name: str
    max_examples: int   # per cell
    budget_s: float     # searching time per cell; later examples are not run
    shrink_s: float     # shrinking time after the first failure
    derandomize: bool   # the same examples on every run, unless a seed is given
    # A search that ran fewer examples (its time ran out first) is inconclusive: it
    # does not pass, whatever it saw.
    min_examples: int = 1


PROFILES = {
    # CI: few examples, the same ones on every run, a bounded time per cell.
    "ci": Profile("ci", max_examples=8, budget_s=30.0, shrink_s=60.0, derandomize=True,
                  min_examples=4),
    # Nightly: many examples from a new seed each night (printed, and in every record).
    "nightly": Profile("nightly", max_examples=100, budget_s=240.0, shrink_s=300.0,
                       derandomize=False, min_examples=20),
}
DEFAULT_PROFILE = "ci"


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """A profile, and the seed its searches start from (None: derandomized)."""

    profile: Profile = PROFILES[DEFAULT_PROFILE]
    seed: int | None = None

    def with_more_time(self, factor: float) -> "SearchSettings":
        """The same search with `factor` times the profile's searching time."""
        longer = dataclasses.replace(self.profile, budget_s=self.profile.budget_s * factor)
        return dataclasses.replace(self, profile=longer)

    def reproduce_options(self) -> str:
        """The pytest options that repeat this search exactly."""
        seed = f" --property-seed {self.seed}" if self.seed is not None else ""
        return f" --property-profile {self.profile.name}{seed}"

    def describe(self) -> str:
        p = self.profile
        seed = f"seed {self.seed}" if self.seed is not None else "derandomized"
        return (f"profile {p.name} ({p.max_examples} examples, at least {p.min_examples}, "
                f"{p.budget_s:g} s per cell, {seed})")


def search_settings(profile: str, seed: int | None) -> SearchSettings:
    """The settings of a session: a nightly profile without a seed gets a new one."""
    if profile not in PROFILES:
        raise ValueError(f"property profile {profile!r}: the profiles are {sorted(PROFILES)}")
    chosen = PROFILES[profile]
    if seed is None and not chosen.derandomize:
        seed = random.SystemRandom().randrange(2**32)
    return SearchSettings(chosen, seed)


@dataclasses.dataclass
class SearchResult:
    examples: int              # examples run (values already seen are not counted twice)
    seconds: float
    out_of_time: bool          # the budget ended the search before max_examples
    minimal: Any = None        # the smallest failing value found, when one was
    failure: str | None = None  # what failed on it

    def metrics(self) -> dict:
        return {"examples": self.examples, "search_s": round(self.seconds, 3),
                "out_of_time": self.out_of_time}


class _Budget:
    """Runs each value once; after the deadline new values count as passing, unrun."""

    def __init__(self, profile: Profile, failure_of: Callable[[Any], str | None],
                 key: Callable[[Any], str]):
        self.profile, self.failure_of, self.key = profile, failure_of, key
        self.started = time.monotonic()
        self.deadline = self.started + profile.budget_s
        self.outcomes: dict[str, str | None] = {}
        self.out_of_time = False
        self.found = False  # a failure was found: the deadline is the shrinking one

    def fails(self, value: Any) -> bool:
        key = self.key(value)
        if key not in self.outcomes:
            if time.monotonic() > self.deadline:
                self.out_of_time = True
                return False
            self.outcomes[key] = self.failure_of(value)
            if self.outcomes[key] is not None and not self.found:
                self.found = True
                self.deadline = time.monotonic() + self.profile.shrink_s
        return self.outcomes[key] is not None


def search(strategy, failure_of: Callable[[Any], str | None], key: Callable[[Any], str],
           settings: SearchSettings) -> SearchResult:
    """Look for a value on which `failure_of` returns a message, and shrink it.

    `failure_of` must not raise: an error is a failure it describes. `key` names
    a value, so that one value is never run twice.
    """
    from hypothesis import HealthCheck, Phase, Verbosity, find
    from hypothesis import settings as hypothesis_settings
    from hypothesis.errors import NoSuchExample

    budget = _Budget(settings.profile, failure_of, key)
    chosen = hypothesis_settings(
        max_examples=settings.profile.max_examples, derandomize=settings.seed is None,
        database=None, deadline=None, verbosity=Verbosity.quiet,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=list(HealthCheck))
    seeded = random.Random(settings.seed) if settings.seed is not None else None
    try:
        minimal = find(strategy, budget.fails, settings=chosen, random=seeded)
    except NoSuchExample:
        minimal = None
    result = SearchResult(len(budget.outcomes), time.monotonic() - budget.started,
                          budget.out_of_time)
    if minimal is not None:
        result.minimal, result.failure = minimal, budget.outcomes[key(minimal)]
    return result
