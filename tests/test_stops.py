from localxai.engines.stops import TextAssembler


def feed_all(stops: tuple[str, ...], pieces: list[bytes]) -> tuple[str, bool]:
    a = TextAssembler(stops)
    out = ""
    for piece in pieces:
        out += a.feed(piece)
        if a.stopped:
            break
    return out + a.flush(), a.stopped


def test_no_stops_passes_text_through() -> None:
    assert feed_all((), [b"hello", b" ", b"world"]) == ("hello world", False)


def test_stop_inside_one_piece_is_cut_and_not_emitted() -> None:
    assert feed_all(("END",), [b"abc END def"]) == ("abc ", True)


def test_stop_split_across_pieces_is_never_emitted() -> None:
    a = TextAssembler(("STOP",))
    assert a.feed(b"one ST") == "one "  # "ST" held back: it may start the stop string
    assert a.feed(b"O") == ""
    assert a.feed(b"P and more") == ""
    assert a.stopped
    assert a.flush() == ""


def test_held_prefix_released_when_it_turns_out_not_to_be_a_stop() -> None:
    a = TextAssembler(("STOP",))
    assert a.feed(b"ST") == ""
    assert a.feed(b"ART") == "START"


def test_held_prefix_released_at_end() -> None:
    assert feed_all(("STOP",), [b"go ST"]) == ("go ST", False)


def test_earliest_of_several_stops_wins() -> None:
    assert feed_all(("zz", "b"), [b"a b zz"]) == ("a ", True)


def test_utf8_split_across_tokens() -> None:
    data = "héllo ✓".encode()
    pieces = [data[i : i + 1] for i in range(len(data))]
    assert feed_all((), pieces) == ("héllo ✓", False)


def test_stop_made_of_multibyte_chars() -> None:
    data = "abc✓✓def".encode()
    pieces = [data[i : i + 2] for i in range(0, len(data), 2)]
    assert feed_all(("✓✓",), pieces) == ("abc", True)
