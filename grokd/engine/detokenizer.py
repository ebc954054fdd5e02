"""Incremental detokenisation and stop-string handling for one sequence.

Text is built from ``Tokenizer.token_bytes`` through an incremental UTF-8 decoder, so a character
split over several byte tokens appears only once complete. Stop strings may span tokens: text
that could still be the start of a stop string is held back until it is known not to be, and a
matched stop string (and anything after it) is never emitted unless asked for.
"""

from __future__ import annotations

import codecs

from grokd.engine.tokenizer import Tokenizer


class Detokenizer:
    def __init__(
        self,
        tokenizer: Tokenizer,
        stop: list[str] | None = None,
        skip_special_tokens: bool = True,
        include_stop_str_in_output: bool = False,
    ) -> None:
        self.tokenizer = tokenizer
        self.stop = [s for s in (stop or []) if s]
        self.max_stop = max((len(s) for s in self.stop), default=0)
        self.skip_special = skip_special_tokens
        self.include_stop = include_stop_str_in_output
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text = ""  # everything decoded so far (may run past a stop string)
        self.emitted = 0  # chars of ``text`` released to the caller
        self.final_len: int | None = None  # set once stopped: output text is text[:final_len]

    def add_token(self, token_id: int, check_stop: bool = True) -> str | None:
        """Decode one token; returns the stop string it completed, if any."""
        if self.skip_special and self.tokenizer.is_special(token_id):
            return None
        start = len(self.text)
        self.text += self._decoder.decode(self.tokenizer.token_bytes(token_id))
        if not (check_stop and self.stop) or self.final_len is not None:
            return None
        # a match must end in the new text; search from where the longest stop could begin
        lo = max(0, start - self.max_stop + 1)
        best: tuple[int, str] | None = None
        for s in self.stop:
            pos = self.text.find(s, lo)
            if pos != -1 and (best is None or pos < best[0]):
                best = (pos, s)
        if best is None:
            return None
        pos, s = best
        self.final_len = pos + len(s) if self.include_stop else pos
        return s

    def finish(self) -> None:
        """Flush the decoder (an incomplete trailing character becomes U+FFFD) and release all."""
        if self.final_len is None:
            self.text += self._decoder.decode(b"", final=True)
            self.final_len = len(self.text)

    def take_delta(self) -> str:
        """Text that is now safe to emit since the last call."""
        if self.final_len is not None:
            end = self.final_len
        else:
            end = len(self.text) - self._held_back()
        end = max(end, self.emitted)
        delta = self.text[self.emitted : end]
        self.emitted = end
        return delta

    @property
    def output_text(self) -> str:
        return self.text[: self.emitted]

    def _held_back(self) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        if not self.stop:
            return 0
        tail = self.text[-self.max_stop :]
        for n in range(min(len(tail), self.max_stop - 1), 0, -1):
            suffix = tail[-n:]
            if any(s.startswith(suffix) for s in self.stop):
                return n
        return 0
