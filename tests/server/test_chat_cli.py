"""``grokd chat`` session logic against a scripted engine (the real model runs in other tests)."""

from __future__ import annotations

import argparse
import io

from grokd.engine.outputs import CompletionOutput, RequestOutput
from grokd.server.chat_cli import ChatSession
from grokd.server.cli import build_parser


class FakeTokenizer:
    chat_template = "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}"
    bos_token_id = None
    eos_token_ids = [0]
    pad_token_id = None

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def token_bytes(self, token_id: int) -> bytes:
        return chr(token_id).encode()


class FakeEngine:
    """Streams a fixed reply in two deltas and records the prompts it was given."""

    def __init__(self) -> None:
        self.tokenizer = FakeTokenizer()
        self.prompts: list[str] = []
        self._pending: list[RequestOutput] = []

    def add_request(self, request_id, prompt_ids, params) -> str:
        self.prompts.append("".join(map(chr, prompt_ids)))
        n = len(self.prompts)
        self._pending = [
            RequestOutput(request_id, prompt_ids, [CompletionOutput(0, delta_text="Hel")]),
            RequestOutput(
                request_id,
                prompt_ids,
                [CompletionOutput(0, delta_text=f"lo {n}", finish_reason="stop")],
                True,
            ),
        ]
        return request_id

    def has_unfinished(self) -> bool:
        return bool(self._pending)

    def step(self) -> list[RequestOutput]:
        return [self._pending.pop(0)]

    def abort(self, request_id: str) -> None:
        self._pending = []


def make_session(system: str | None = None) -> tuple[ChatSession, FakeEngine, io.StringIO]:
    args = argparse.Namespace(system=system, max_tokens=8, temperature=0.0, top_p=1.0, seed=None)
    engine, out = FakeEngine(), io.StringIO()
    return ChatSession(engine, args, out), engine, out


def test_streams_reply_and_keeps_history() -> None:
    session, engine, out = make_session(system="Be nice.")
    assert session.handle("Hi")
    assert session.handle("Again")
    assert out.getvalue() == "Hello 1\nHello 2\n"
    assert engine.prompts[1] == "[system]Be nice.[user]Hi[assistant]Hello 1[user]Again"


def test_reset_system_and_exit() -> None:
    session, engine, out = make_session()
    session.handle("Hi")
    session.handle("/system Talk like a pirate.")
    session.handle("/reset")
    session.handle("Yo")
    assert engine.prompts[-1] == "[system]Talk like a pirate.[user]Yo"
    session.handle("/system")
    session.handle("/reset")
    session.handle("Plain")
    assert engine.prompts[-1] == "[user]Plain"
    session.handle("/nope")
    assert "unknown command" in out.getvalue()
    assert session.handle("/exit") is False


def test_subcommand_is_registered() -> None:
    args = build_parser().parse_args(["chat", "--temperature", "0", "--system", "x"])
    assert args.command == "chat" and args.temperature == 0.0 and args.system == "x"
