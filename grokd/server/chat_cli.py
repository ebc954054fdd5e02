"""``grokd chat``: an interactive terminal chat for a quick human check of a model.

Runs the engine in-process (no server), renders the conversation with the model's chat template
(or the plain Grok-1 format for models without one) and streams the reply as it is generated.
Commands: ``/reset`` clears the conversation, ``/system TEXT`` sets the system prompt (``/system``
alone clears it), ``/exit`` quits. Ctrl-C stops the current reply; Ctrl-D quits.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from grokd.engine.outputs import RequestOutput
    from grokd.engine.sampling_params import SamplingParams
    from grokd.engine.tokenizer import Tokenizer

HELP = "commands: /reset, /system [TEXT], /exit"


class StepEngine(Protocol):
    """What the chat needs of ``grokd.engine.llm_engine.LLMEngine`` (driven in this thread)."""

    @property
    def tokenizer(self) -> Tokenizer | None: ...

    def add_request(self, request_id: str, prompt_token_ids: list[int], params: SamplingParams) -> object: ...

    def has_unfinished(self) -> bool: ...

    def step(self) -> list[RequestOutput]: ...

    def abort(self, request_id: str) -> object: ...


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("chat", help="interactive terminal chat with a model (streams replies)")
    p.add_argument(
        "--model", default=None, help="checkpoint path (default: the bundled SmolLM2-135M-Instruct)"
    )
    p.add_argument("--tokenizer", default=None, help="tokenizer path overriding the checkpoint's")
    p.add_argument("--dtype", default="float32", choices=["bfloat16", "float32", "float16"])
    p.add_argument("--weights-dtype", default="auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--system", default=None, help="initial system prompt")
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=run)


class ChatSession:
    """Conversation state plus one streamed generation per user turn; I/O is injected for tests."""

    def __init__(self, engine: StepEngine, args: argparse.Namespace, out: TextIO) -> None:
        self.engine = engine
        self.args = args
        self.out = out
        self.system: str | None = args.system
        self.history: list[dict[str, str]] = []
        self._turn = 0

    def handle(self, line: str) -> bool:
        """Process one input line; False means quit."""
        text = line.strip()
        if not text:
            return True
        if text in ("/exit", "/quit"):
            return False
        if text == "/reset":
            self.history.clear()
            self.out.write("(conversation cleared)\n")
            return True
        if text == "/system" or text.startswith("/system "):
            self.system = text[len("/system") :].strip() or None
            self.out.write(f"(system prompt {'set' if self.system else 'cleared'})\n")
            return True
        if text.startswith("/"):
            self.out.write(f"unknown command; {HELP}\n")
            return True
        self.history.append({"role": "user", "content": text})
        reply = self.reply()
        if reply is None:
            self.history.pop()  # interrupted or failed: forget the unanswered turn
        else:
            self.history.append({"role": "assistant", "content": reply})
        return True

    def messages(self) -> list[dict[str, str]]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history

    def reply(self) -> str | None:
        """Generate and stream one assistant turn; returns its text (None if interrupted/failed)."""
        from grokd.engine.chat_template import PLAIN_STOP_STRINGS, render_chat
        from grokd.engine.sampling_params import SamplingParams

        tok = self.engine.tokenizer
        assert tok is not None, "run() refuses a checkpoint without a tokenizer"
        template = getattr(tok, "chat_template", None)
        try:
            prompt = render_chat(self.messages(), template=template, tokenizer=tok)
        except ValueError as exc:
            self.out.write(f"error: {exc}\n")
            return None
        params = SamplingParams(
            max_tokens=self.args.max_tokens,
            temperature=self.args.temperature,
            top_p=self.args.top_p,
            seed=self.args.seed,
            stop=list(PLAIN_STOP_STRINGS) if template is None else [],
        )
        self._turn += 1
        request_id = f"chat-{self._turn}"
        try:
            self.engine.add_request(request_id, tok.encode(prompt), params)
        except ValueError as exc:  # e.g. the conversation outgrew the context window
            self.out.write(f"error: {exc} (try /reset)\n")
            return None
        parts: list[str] = []
        try:
            while self.engine.has_unfinished():
                for out in self.engine.step():
                    if out.request_id != request_id:
                        continue
                    delta = out.outputs[0].delta_text
                    if delta:
                        parts.append(delta)
                        self.out.write(delta)
                        self.out.flush()
                    if out.finished and out.error:
                        self.out.write(f"\nerror: {out.error}\n")
                        return None
        except KeyboardInterrupt:
            self.engine.abort(request_id)
            self.out.write("\n(interrupted)\n")
            return None
        self.out.write("\n")
        return "".join(parts).strip()


def run(args: argparse.Namespace) -> int:
    from grokd.engine.config import EngineConfig, ModelLoadConfig
    from grokd.engine.llm_engine import LLMEngine

    config = EngineConfig(
        model=ModelLoadConfig.from_namespace(args)
    )
    print("loading model...", file=sys.stderr, flush=True)
    engine = LLMEngine.from_config(config)
    if engine.tokenizer is None:
        print("error: this checkpoint has no tokenizer; pass --tokenizer PATH", file=sys.stderr)
        return 2
    session = ChatSession(engine, args, sys.stdout)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"grokd chat - {HELP}; Ctrl-D to quit", file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            break
        except KeyboardInterrupt:
            print(file=sys.stderr)
            continue
        if not session.handle(line):
            break
    return 0
