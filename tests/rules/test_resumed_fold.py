"""A fold resumed from the runs a track's first events made (what `trackhook prune` keeps
of them) goes on exactly as the fold of every event: same runs, outcomes and run of each
later event, retries of the removed events included."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.rules.lifecycle import Outcome, RecordingState, Status, TrackEvent, TrackFold
from tests.property.strategies import History, histories

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def events_per_key(history: History) -> list[list[TrackEvent]]:
    per_key: dict[tuple[str, str, str], list[TrackEvent]] = {}
    for number, delivery in enumerate(history.deliveries("p")):
        if delivery.key is not None:
            event = delivery.event(T0 + timedelta(seconds=number))
            per_key.setdefault(delivery.key, []).append(event)
    return list(per_key.values())


@given(history=histories(), data=st.data())
def test_a_resumed_fold_goes_on_as_the_whole_fold(history: History, data: st.DataObject) -> None:
    for events in events_per_key(history):
        cut = data.draw(st.integers(0, len(events)), label="cut")
        whole = TrackFold()
        steps = [whole.apply(event) for event in events]
        first = TrackFold()
        for event in events[:cut]:
            first.apply(event)

        resumed = TrackFold.resumed(first.recordings)
        later = [resumed.apply(event) for event in events[cut:]]

        assert resumed.recordings == whole.recordings
        assert [(s.outcome, s.sequence) for s in later] == [
            (s.outcome, s.sequence) for s in steps[cut:]
        ]


def run(sequence: int, *fingerprints: str, status: Status = Status.STOPPED) -> RecordingState:
    return RecordingState(
        sequence, status, T0, T0, {Status.STARTING: T0, status: T0}, fingerprints=fingerprints
    )


def test_a_retry_of_a_removed_delivery_is_still_a_duplicate_of_its_run() -> None:
    files = ({"filePath": "/v/a.mp4", "fileUrl": "https://cdn/a.mp4"},)
    resumed = TrackFold.resumed([run(1, "start-1", "stop-1"), run(2, "start-2", "stop-2")])

    of_run_one = resumed.apply(TrackEvent(Status.STOPPED, "stop-1", T0, files))
    of_run_two = resumed.apply(TrackEvent(Status.STOPPED, "stop-2", T0, files))

    assert (of_run_one.outcome, of_run_one.sequence) == (Outcome.DUPLICATE, 1)
    assert (of_run_two.outcome, of_run_two.sequence) == (Outcome.DUPLICATE, 2)
    assert len(resumed.recordings) == 2


def test_runs_must_be_the_first_ones_in_order() -> None:
    with pytest.raises(ValueError, match="runs 1..2 expected"):
        TrackFold.resumed([run(2, "a"), run(3, "b")])
