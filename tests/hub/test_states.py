"""The transition table: every allowed and refused transition, and the generated docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from livesrv.hub.states import TRANSITIONS, Event, InvalidTransition, State, render_markdown, transition


def test_table() -> None:
    assert transition(State.IDLE, Event.PUBLISH) is State.STARTING
    assert transition(State.DRAINING, Event.PUBLISH) is State.STARTING  # a republish never waits for a drain
    assert transition(State.LIVE, Event.PUBLISH) is State.STARTING  # takeover
    assert transition(State.STARTING, Event.READY) is State.LIVE
    assert transition(State.STARTING, Event.ABORT) is State.IDLE  # partial acquisition rolled back
    assert transition(State.LIVE, Event.UNPUBLISH) is State.DRAINING
    assert transition(State.DRAINING, Event.DRAINED) is State.IDLE


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_everything_else_is_refused(state: State, event: Event) -> None:
    if (state, event) in TRANSITIONS:
        return
    with pytest.raises(InvalidTransition):
        transition(state, event)


def test_every_state_can_get_back_to_idle() -> None:
    """No state that only a restart can clear."""
    for start in State:
        seen, todo = {start}, [start]
        while todo:
            s = todo.pop()
            for (src, _), dst in TRANSITIONS.items():
                if src is s and dst not in seen:
                    seen.add(dst)
                    todo.append(dst)
        assert State.IDLE in seen, start


def test_docs_are_generated_from_the_table() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "state-machine.md"
    assert doc.read_text() == render_markdown(), "run: python -m livesrv.hub.states > docs/state-machine.md"
