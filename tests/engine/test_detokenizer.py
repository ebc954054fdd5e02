"""Incremental detokenisation and stop strings on Grok-1's real SentencePiece tokenizer."""

import pytest

from grokd.engine.detokenizer import Detokenizer


@pytest.fixture(scope="module")
def tok(grok1_tokenizer_path):
    from grokd.engine.sp_tokenizer import SentencePieceTokenizer

    return SentencePieceTokenizer(grok1_tokenizer_path)


def stream(det: Detokenizer, ids: list[int]) -> tuple[list[str], str | None]:
    deltas, stopped = [], None
    for t in ids:
        stopped = det.add_token(t)
        deltas.append(det.take_delta())
        if stopped is not None:
            break
    if stopped is None:
        det.finish()
        deltas.append(det.take_delta())
    return deltas, stopped


def byte_ids(tok, data: bytes) -> list[int]:
    return [tok.sp.piece_to_id(f"<0x{b:02X}>") for b in data]


def test_multibyte_char_split_over_byte_tokens_is_never_split(tok):
    ids = tok.encode("hi") + byte_ids(tok, "🙂é".encode())
    deltas, _ = stream(Detokenizer(tok), ids)
    assert "".join(deltas) == " hi🙂é"
    assert deltas[1:5] == ["", "", "", "🙂"]
    assert all("\ufffd" not in d for d in deltas)


def test_plain_text_roundtrip(tok):
    text = "naïve café 日本語 🙂 and a\nnew line"
    deltas, _ = stream(Detokenizer(tok), tok.encode(text))
    assert "".join(deltas) == " " + text  # SentencePiece's word-boundary space is kept in running text


def test_stop_string_spanning_tokens_is_never_emitted(tok):
    ids = tok.encode("Hello world. STOP here")
    det = Detokenizer(tok, stop=["ld. ST"])
    deltas, stopped = stream(det, ids)
    assert stopped == "ld. ST"
    assert "".join(deltas) == " Hello wor"
    assert deltas[:2] == [" Hello", " wor"]  # "ld" held back: it could start the stop string
    assert det.output_text == " Hello wor"


def test_include_stop_str_in_output(tok):
    det = Detokenizer(tok, stop=["ld. ST"], include_stop_str_in_output=True)
    deltas, stopped = stream(det, tok.encode("Hello world. STOP here"))
    assert "".join(deltas) == " Hello world. ST"


def test_earliest_of_several_stop_strings_wins(tok):
    det = Detokenizer(tok, stop=["here", "STOP"])
    deltas, stopped = stream(det, tok.encode("Hello world. STOP here"))
    assert stopped == "STOP" and "".join(deltas) == " Hello world. "


def test_held_back_text_released_when_no_stop_matches(tok):
    det = Detokenizer(tok, stop=["world peace"])
    deltas, stopped = stream(det, tok.encode("Hello world"))
    assert stopped is None
    assert deltas == [" Hello", " ", "world"]  # "world" could begin "world peace": held to the end


def test_special_tokens_skipped_or_kept(tok):
    eos = tok.eos_token_ids[0]
    det = Detokenizer(tok)
    det.add_token(eos)
    det.finish()
    assert det.take_delta() == ""
    assert tok.is_special(eos)


def test_stop_check_can_be_deferred(tok):
    det = Detokenizer(tok, stop=["Hello"])
    assert det.add_token(tok.encode("Hello")[0], check_stop=False) is None
    assert det.add_token(tok.encode(" world")[0]) is None  # only matches ending in new text count
