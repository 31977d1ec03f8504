"""StopFilter: streamed text never shows a stop sequence, nor anything after it."""

from __future__ import annotations

import pytest

from portico.engines.stops import StopFilter


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    stop_filter = StopFilter(stops)
    out = ""
    for piece in pieces:
        out += stop_filter.feed(piece)
        if stop_filter.stopped:
            return out, True
    return out + stop_filter.flush(), False


def test_without_stops_text_passes_through() -> None:
    assert run([], ["a", "b"]) == ("ab", False)


def test_stop_inside_one_piece_cuts_there() -> None:
    assert run(["END"], ["hello END world"]) == ("hello ", True)


def test_stop_split_across_pieces_is_caught_and_never_shown() -> None:
    assert run(["<|end|>"], ["hi <|", "en", "d|> more"]) == ("hi ", True)


def test_a_false_start_is_released_once_it_cannot_match() -> None:
    stop_filter = StopFilter(["STOP"])
    assert stop_filter.feed("go ST") == "go "
    assert stop_filter.feed("ART") == "START"
    assert not stop_filter.stopped


def test_held_text_is_flushed_at_the_end() -> None:
    assert run(["STOP"], ["tail ST"]) == ("tail ST", False)


@pytest.mark.parametrize("stops", [["b", "abc"], ["abc", "b"]])
def test_the_earliest_stop_wins(stops: list[str]) -> None:
    assert run(stops, ["xabc"]) == ("x", True)


def test_nothing_comes_after_a_stop() -> None:
    stop_filter = StopFilter(["."])
    stop_filter.feed("one.")
    assert stop_filter.feed("two") == ""
    assert stop_filter.flush() == ""
