"""The stream state machine: the only place where a stream's lifecycle transitions are defined.

Every transition is checked and committed by :func:`transition` in one synchronous step, so no other task can
run between "is this allowed?" and "it is done" (SRS's "stream busy forever" family of bugs is an ``await``
in that gap). Slow work (hooks, closing a segment, waiting for viewers) happens while a stream *sits* in
STARTING or DRAINING, never inside a transition; a completion carries the generation it belongs to and is
ignored when the stream has moved on (see :mod:`livesrv.hub.hub`).

``docs/state-machine.md`` is generated from :data:`TRANSITIONS` by ``python -m livesrv.hub.states``.
"""

from __future__ import annotations

import enum
import sys


class State(enum.Enum):
    IDLE = "idle"  # no publisher; viewers may be waiting (before a first publish, or in their grace period)
    STARTING = "starting"  # a publisher holds the stream; its on_publish hook is being awaited
    LIVE = "live"  # the accepted publisher's media flows to viewers
    DRAINING = "draining"  # the publisher left; on_unpublish and output finishing run; viewers stay attached


class Event(enum.Enum):
    PUBLISH = "publish"  # a publisher asks for the stream (takes it over from a stale one when allowed)
    READY = "ready"  # its on_publish hooks accepted: media may flow
    ABORT = "abort"  # its publish failed before READY (hook rejected, client left, error, cancellation)
    UNPUBLISH = "unpublish"  # the live publisher left (or was kicked)
    DRAINED = "drained"  # the drain work of the current generation finished


class InvalidTransition(Exception):
    """The event is not allowed in the stream's current state (a caller bug or a stale completion)."""


#: (state, event) -> next state. Nothing else in the code changes a stream's state.
TRANSITIONS: dict[tuple[State, Event], State] = {
    (State.IDLE, Event.PUBLISH): State.STARTING,
    # A publisher arriving while the previous one's teardown still runs is accepted at once, with a new
    # generation; the old drain finishes on its own and its DRAINED is then stale (ignored).
    (State.DRAINING, Event.PUBLISH): State.STARTING,
    # Takeover (the default policy): a new publisher replaces a stale one (e.g. a half-open TCP connection
    # after a network drop). The old generation is closed by the hub; it can never act on the new one.
    (State.STARTING, Event.PUBLISH): State.STARTING,
    (State.LIVE, Event.PUBLISH): State.STARTING,
    (State.STARTING, Event.READY): State.LIVE,
    (State.STARTING, Event.ABORT): State.IDLE,
    (State.LIVE, Event.UNPUBLISH): State.DRAINING,
    (State.DRAINING, Event.DRAINED): State.IDLE,
}

#: Events that start a new generation (a new live period with its own publisher).
NEW_GENERATION = frozenset({Event.PUBLISH})

#: States in which a publisher holds the stream.
PUBLISHED = frozenset({State.STARTING, State.LIVE})


def transition(state: State, event: Event) -> State:
    """The next state, or :class:`InvalidTransition`. Pure: the hub commits the result in the same step."""
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(f"{event.value} is not allowed in state {state.value}") from None


def render_markdown() -> str:
    """The table and a mermaid diagram for docs/state-machine.md."""
    lines = [
        "# Stream state machine",
        "",
        "Generated from `src/livesrv/hub/states.py` by `python -m livesrv.hub.states`; do not edit by hand.",
        "",
        "```mermaid",
        "stateDiagram-v2",
        "    [*] --> idle",
    ]
    for (src, ev), dst in TRANSITIONS.items():
        lines.append(f"    {src.value} --> {dst.value}: {ev.value}")
    lines += ["    idle --> [*]: collected (no viewer, no pending work)", "```", "", "| state | event | next |", "|---|---|---|"]
    for (src, ev), dst in TRANSITIONS.items():
        gen = " (new generation)" if ev in NEW_GENERATION else ""
        lines.append(f"| {src.value} | {ev.value} | {dst.value}{gen} |")
    lines += [
        "",
        "Every completion (READY, ABORT, UNPUBLISH, DRAINED) carries the generation it belongs to; the hub",
        "ignores it when the stream has started another generation since. Hooks, closing viewers and finishing",
        "HLS segments run while the stream sits in `starting` or `draining`, never inside a transition.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
