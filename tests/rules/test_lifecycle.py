"""The pure lifecycle module on hand-written histories (no database, no HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.rules.lifecycle import (
    Outcome,
    RecordingState,
    Status,
    TrackEvent,
    fold,
    merge_files,
    next_status,
    opens_new_recording,
    transition,
)

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
S = Status
NON_TERMINAL = (S.STARTING, S.STARTED, S.STOPPING)


def at(second: int) -> datetime:
    return T0 + timedelta(seconds=second)


def file(name: str, url: str | None = None) -> dict[str, str]:
    return {"filePath": f"/v/{name}.mp4", "fileUrl": url or f"https://cdn/{name}.mp4"}


def event(
    status: Status,
    second: int,
    fingerprint: str | None = None,
    files: tuple[dict[str, str], ...] = (),
) -> TrackEvent:
    """One delivery; the fingerprint defaults to the type, so equal types are exact repeats."""
    return TrackEvent(status, fingerprint or status.value, at(second), files)


def state(status: Status, *received: Status, sequence: int = 1) -> RecordingState:
    return RecordingState(
        sequence=sequence,
        status=status,
        created_at=T0,
        updated_at=T0,
        received=dict.fromkeys(received, T0),
    )


# next_status


@pytest.mark.parametrize(
    ("current", "incoming", "expected"),
    [
        (S.STARTING, S.STARTED, S.STARTED),
        (S.STARTING, S.STOPPING, S.STOPPING),
        (S.STARTED, S.STARTING, S.STARTED),
        (S.STOPPING, S.STARTED, S.STOPPING),
        (S.STOPPING, S.STARTING, S.STOPPING),
        (S.STARTED, S.STARTED, S.STARTED),
    ],
)
def test_next_status_is_the_furthest_non_terminal(
    current: Status, incoming: Status, expected: Status
) -> None:
    assert next_status(current, incoming) is expected


@pytest.mark.parametrize("current", NON_TERMINAL)
@pytest.mark.parametrize("terminal", [S.STOPPED, S.FAILED])
def test_a_terminal_status_overrides_any_non_terminal(current: Status, terminal: Status) -> None:
    assert next_status(current, terminal) is terminal


@pytest.mark.parametrize("terminal", [S.STOPPED, S.FAILED])
@pytest.mark.parametrize("incoming", list(Status))
def test_the_first_terminal_status_is_final(terminal: Status, incoming: Status) -> None:
    assert next_status(terminal, incoming) is terminal


# merge_files


def test_merge_files_keeps_first_received_order_and_deduplicates_by_path() -> None:
    merged = merge_files([file("a"), file("b")], [file("c"), file("a"), file("d"), file("c")])
    assert [entry["filePath"] for entry in merged] == [
        "/v/a.mp4",
        "/v/b.mp4",
        "/v/c.mp4",
        "/v/d.mp4",
    ]


def test_merge_files_keeps_the_first_entry_of_a_path() -> None:
    first = file("a", "https://cdn/a.mp4?first")
    merged = merge_files([first], [file("a", "https://cdn/a.mp4?second")])
    assert merged == (first,)


def test_merge_files_deduplicates_within_one_delivery_and_never_drops() -> None:
    assert merge_files([], [file("a"), file("a")]) == (file("a"),)
    assert merge_files([file("a"), file("b")], []) == (file("a"), file("b"))


def test_merge_files_keeps_extra_attributes() -> None:
    entry = {**file("a"), "size": 12, "meta": {"codec": "opus"}}
    assert merge_files([], [entry]) == (entry,)


# opens_new_recording


def test_a_first_event_of_any_type_opens_a_recording() -> None:
    for status in Status:
        assert opens_new_recording(None, event(status, 0))


@pytest.mark.parametrize("restart", [S.STARTING, S.STARTED])
@pytest.mark.parametrize("terminal", [S.STOPPED, S.FAILED])
def test_a_start_the_finished_recording_already_had_opens_the_next(
    restart: Status, terminal: Status
) -> None:
    latest = state(terminal, S.STARTING, S.STARTED, terminal)
    assert opens_new_recording(latest, event(restart, 9, fingerprint="again"))
    # Even an exact repeat of that start: VideoSDK payloads carry no timestamps.
    assert opens_new_recording(latest, event(restart, 9))


@pytest.mark.parametrize("restart", [S.STARTING, S.STARTED])
def test_a_late_start_belongs_to_the_finished_recording(restart: Status) -> None:
    other = S.STARTED if restart is S.STARTING else S.STARTING
    assert not opens_new_recording(state(S.STOPPED, other, S.STOPPED), event(restart, 9))


@pytest.mark.parametrize("status", [S.STOPPING, S.STOPPED, S.FAILED])
def test_only_starts_open_a_next_recording(status: Status) -> None:
    latest = state(S.STOPPED, *Status)
    assert not opens_new_recording(latest, event(status, 9, fingerprint="again"))


@pytest.mark.parametrize("status", NON_TERMINAL)
def test_a_start_never_opens_a_recording_while_the_latest_is_running(status: Status) -> None:
    latest = state(status, S.STARTING, S.STARTED, S.STOPPING)
    assert not opens_new_recording(latest, event(S.STARTING, 9, fingerprint="again"))


# transition


def test_transition_records_first_receipt_per_type_and_latest_update() -> None:
    first = transition(None, event(S.STARTED, 5)).recording
    later = transition(first, event(S.STARTING, 3, fingerprint="starting")).recording
    again = transition(later, event(S.STARTED, 8, fingerprint="started-2")).recording
    assert again.received == {S.STARTED: at(5), S.STARTING: at(3)}
    assert again.created_at == at(5)
    assert again.updated_at == at(8)  # the max, whatever the apply order
    assert transition(again, event(S.STOPPING, 1)).recording.updated_at == at(8)


def test_transition_reports_an_exact_repeat_as_duplicate_and_changes_nothing() -> None:
    opened = transition(None, event(S.STOPPED, 0, files=(file("a"),)))
    repeat = transition(opened.recording, event(S.STOPPED, 4, files=(file("b"),)))
    assert repeat.outcome is Outcome.DUPLICATE
    assert not repeat.opened
    assert repeat.recording is opened.recording


# fold of whole histories


def test_fold_of_a_full_lifecycle_in_order() -> None:
    result = fold(
        [
            event(S.STARTING, 0),
            event(S.STARTED, 1),
            event(S.STOPPING, 2),
            event(S.STOPPED, 3, files=(file("a"),)),
        ]
    )
    assert result.outcomes == (Outcome.APPLIED,) * 4
    (recording,) = result.recordings
    assert recording.sequence == 1
    assert recording.status is S.STOPPED
    assert recording.received == {
        S.STARTING: at(0),
        S.STARTED: at(1),
        S.STOPPING: at(2),
        S.STOPPED: at(3),
    }
    assert (recording.created_at, recording.updated_at) == (at(0), at(3))
    assert recording.files == (file("a"),)
    assert recording.fingerprints == ("starting", "started", "stopping", "stopped")


def test_fold_of_a_restart_gives_sequence_two() -> None:
    result = fold(
        [
            event(S.STARTING, 0),
            event(S.STARTED, 1),
            event(S.STOPPED, 2, files=(file("a"),)),
            event(S.STARTING, 3),  # the same payload again: the track is recorded again
            event(S.STARTED, 4),
            # Another payload than run 1's -stopped: it carries other files.
            event(S.STOPPED, 5, "stopped-run-2", files=(file("a"), file("b"))),
        ]
    )
    assert result.outcomes == (Outcome.APPLIED,) * 6
    first, second = result.recordings
    assert (first.sequence, first.status, first.files) == (1, S.STOPPED, (file("a"),))
    assert (second.sequence, second.status) == (2, S.STOPPED)
    assert second.files == (file("a"), file("b"))
    assert second.received == {S.STARTING: at(3), S.STARTED: at(4), S.STOPPED: at(5)}
    assert second.created_at == at(3)
    assert first.updated_at == at(2)


def test_fold_a_late_started_belongs_to_the_old_recording() -> None:
    result = fold([event(S.STARTING, 0), event(S.STOPPED, 1), event(S.STARTED, 2)])
    (recording,) = result.recordings
    assert result.outcomes == (Outcome.APPLIED,) * 3
    assert recording.status is S.STOPPED  # never moves back
    assert recording.received[S.STARTED] == at(2)
    assert recording.updated_at == at(2)


def test_fold_after_a_late_start_a_repeat_of_it_restarts() -> None:
    result = fold(
        [event(S.STOPPED, 0), event(S.STARTED, 1), event(S.STARTED, 2), event(S.STARTING, 3)]
    )
    assert [r.sequence for r in result.recordings] == [1, 2]
    assert result.recordings[0].received == {S.STOPPED: at(0), S.STARTED: at(1)}
    assert result.recordings[1].status is S.STARTED  # the furthest, not the last
    assert result.recordings[1].received == {S.STARTED: at(2), S.STARTING: at(3)}
    assert result.outcomes == (Outcome.APPLIED,) * 4


@pytest.mark.parametrize(("first", "second"), [(S.STOPPED, S.FAILED), (S.FAILED, S.STOPPED)])
def test_fold_first_terminal_wins_and_later_files_are_still_merged(
    first: Status, second: Status
) -> None:
    result = fold(
        [
            event(S.STARTED, 0),
            event(first, 1, files=(file("a"),)),
            event(second, 2, files=(file("a", "https://other"), file("b"))),
        ]
    )
    (recording,) = result.recordings
    assert recording.status is first
    assert recording.received == {S.STARTED: at(0), first: at(1), second: at(2)}
    assert recording.files == (file("a"), file("b"))
    assert result.outcomes == (Outcome.APPLIED,) * 3


def test_fold_duplicates_change_nothing() -> None:
    result = fold(
        [
            event(S.STARTING, 0),
            event(S.STARTING, 1),
            event(S.STOPPED, 2, files=(file("a"),)),
            event(S.STOPPED, 3, files=(file("a"),)),
            event(S.STOPPING, 4),
            event(S.STOPPING, 5),
        ]
    )
    assert result.outcomes == (
        Outcome.APPLIED,
        Outcome.DUPLICATE,
        Outcome.APPLIED,
        Outcome.DUPLICATE,
        Outcome.APPLIED,
        Outcome.DUPLICATE,
    )
    (recording,) = result.recordings
    assert recording.received == {S.STARTING: at(0), S.STOPPED: at(2), S.STOPPING: at(4)}
    assert recording.updated_at == at(4)
    assert recording.files == (file("a"),)
    assert recording.fingerprints == ("starting", "stopped", "stopping")


def test_fold_a_second_distinct_stopped_merges_files_without_duplicates() -> None:
    result = fold(
        [
            event(S.STOPPED, 0, "stopped-1", files=(file("a"), file("b"))),
            event(S.STOPPED, 1, "stopped-2", files=(file("b"), file("c"))),
        ]
    )
    (recording,) = result.recordings
    assert [entry["filePath"] for entry in recording.files] == ["/v/a.mp4", "/v/b.mp4", "/v/c.mp4"]
    assert recording.received == {S.STOPPED: at(0)}  # the first receipt is kept
    assert result.outcomes == (Outcome.APPLIED, Outcome.APPLIED)


def test_fold_a_stopped_first_then_the_rest_stays_one_recording() -> None:
    result = fold([event(S.STOPPED, 0), event(S.STARTING, 1), event(S.STARTED, 2)])
    (recording,) = result.recordings
    assert recording.status is S.STOPPED
    assert set(recording.received) == {S.STOPPED, S.STARTING, S.STARTED}


def test_fold_of_nothing_is_nothing() -> None:
    assert fold([]).recordings == ()
    assert fold([]).outcomes == ()


def test_fold_a_duplicate_is_judged_against_the_latest_recording_only() -> None:
    # After a restart, the stopped of run 1 is not a repeat for run 2: it is applied there.
    result = fold(
        [
            event(S.STARTING, 0),
            event(S.STOPPED, 1),
            event(S.STARTING, 2),
            event(S.STOPPED, 3),
            event(S.STOPPED, 4),
        ]
    )
    assert [r.status for r in result.recordings] == [S.STOPPED, S.STOPPED]
    assert result.outcomes[-2:] == (Outcome.APPLIED, Outcome.DUPLICATE)


# A retry of an earlier run's delivery


def test_a_retry_with_files_of_an_earlier_runs_delivery_is_a_duplicate_of_that_run() -> None:
    """Files belong to one run: an exact repeat that carries files is a retry, whatever run
    is latest now (issue 10, finding 4: it used to be applied to run 2)."""
    stopped = event(S.STOPPED, 2, "stopped-run-1", files=(file("one"),))
    result = fold(
        [event(S.STARTING, 0), event(S.STARTED, 1), stopped, event(S.STARTING, 3), stopped]
    )
    first, second = result.recordings
    assert result.outcomes[-1] is Outcome.DUPLICATE
    assert result.sequences[-1] == 1  # the retry belongs to run 1
    assert (second.status, second.files) == (S.STARTING, ())
    assert first.files == (file("one"),)


def test_transition_names_the_earlier_run_a_retry_belongs_to() -> None:
    latest = state(S.STARTING, S.STARTING, sequence=2)
    retry = event(S.STOPPED, 9, "from-run-1", files=(file("a"),))
    step = transition(latest, retry, {"from-run-1": 1})
    assert (step.outcome, step.duplicate_of, step.sequence, step.recording) == (
        Outcome.DUPLICATE, 1, 1, latest
    )  # fmt: skip


def test_a_retry_without_files_still_follows_the_restart_rule() -> None:
    """A repeated -started after -stopped cannot be told apart from a new run: it opens one
    (visible as a stuck recording if no -stopped ever follows)."""
    result = fold([event(S.STARTED, 0), event(S.STOPPED, 1), event(S.STARTED, 2)])
    assert [r.sequence for r in result.recordings] == [1, 2]
    assert result.outcomes == (Outcome.APPLIED,) * 3
