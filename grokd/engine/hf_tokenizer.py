"""Tokenizer over the Hugging Face ``tokenizers`` library, from a tokenizer.json or GGUF metadata.

For GGUF files the byte-level BPE tokenizer is rebuilt from ``tokenizer.ggml.*`` fields: the vocab
and merges, the control (special) and user-defined tokens, and the pre-tokenizer llama.cpp uses
for ``tokenizer.ggml.pre`` (how text is cut into words before merging). Getting the pre-tokenizer
wrong still produces plausible ids, just not the ones the model was trained on, so the splits
below follow llama.cpp's table: e.g. ``smollm`` (like ``starcoder``) isolates every digit, then
applies the GPT-2 regex.

``encode`` never adds BOS and always matches special-token strings in the text (chat templates
write ``<|im_start|>`` literally). ``token_bytes`` gives each token's exact bytes so the engine can
detokenise incrementally without splitting UTF-8 characters.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from grokd.engine.tokenizer import token_text
from grokd.weights.checkpoint import TokenizerSource

log = logging.getLogger(__name__)

# llama.cpp token types
_CONTROL, _USER_DEFINED = 3, 4

# Tokens that end an assistant turn in common chat formats; added to eos ids when special.
_END_OF_TURN = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|eom_id|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
)

_GPT2_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# tokenizer.ggml.pre -> how llama.cpp pre-tokenizes
_DIGITS_THEN_GPT2 = {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
_GPT2_LIKE = {"default", "gpt2", "gpt-2", "mpt", "olmo", "jais", "trillion"}
_LLAMA3_LIKE = {"llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "dbrx", "smaug-bpe"}
_QWEN2_LIKE = {"qwen2", "deepseek-r1-qwen", "stablelm2"}


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _byte_level_pre_tokenizer(pre: str | None) -> pre_tokenizers.PreTokenizer:
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if pre in _DIGITS_THEN_GPT2:
        splits = [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Split(Regex(_GPT2_SPLIT), "isolated"),
        ]
    elif pre in _LLAMA3_LIKE:
        splits = [pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), "isolated")]
    elif pre in _QWEN2_LIKE:
        splits = [pre_tokenizers.Split(Regex(_QWEN2_SPLIT), "isolated")]
    else:
        if pre not in _GPT2_LIKE and pre is not None:
            log.warning("unknown GGUF pre-tokenizer %r; using the GPT-2 split", pre)
        splits = [pre_tokenizers.Split(Regex(_GPT2_SPLIT), "isolated")]
    return pre_tokenizers.Sequence([*splits, byte_level])


def _sentencepiece_bpe(fields: dict[str, Any], vocab: dict[str, int]) -> Tokenizer:
    """A SentencePiece-BPE vocabulary (``tokenizer.ggml.model == "llama"``): spaces are ``▁``,
    unknown bytes fall back to ``<0xNN>`` tokens, and merges are recovered from the scores (a
    merge ranks by its result's score) when the file does not list them."""
    if fields.get("merges"):
        merges = [tuple(m.split(" ", 1)) for m in fields["merges"]]
    else:
        scores = list(fields.get("scores") or [0.0] * len(vocab))
        found: list[tuple[float, int, int, str, str]] = []
        for piece, idx in vocab.items():
            for cut in range(1, len(piece)):
                left, right = piece[:cut], piece[cut:]
                if left in vocab and right in vocab:
                    found.append((-scores[idx], vocab[left], vocab[right], left, right))
        merges = [(left, right) for *_, left, right in sorted(found)]
    unk_id = fields.get("unk_token_id")
    tokens = list(vocab)
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token=tokens[unk_id] if unk_id is not None else None,
            byte_fallback=True,
            fuse_unk=True,
        )
    )
    prefix = bool(fields.get("add_space_prefix", True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first" if prefix else "never", split=False
    )
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    return tok


class HFTokenizer:
    """The engine's :class:`engine.tokenizer.Tokenizer` backed by a ``tokenizers.Tokenizer``."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        bos_token_id: int | None,
        eos_token_ids: list[int],
        pad_token_id: int | None,
        chat_template: str | None,
        byte_level: bool,
    ) -> None:
        self._tok = tokenizer
        self.bos_token_id = bos_token_id
        self.eos_token_ids = list(dict.fromkeys(eos_token_ids))
        self.pad_token_id = pad_token_id
        self.chat_template = chat_template
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        added = tokenizer.get_added_tokens_decoder()
        self._special = frozenset(i for i, t in added.items() if t.special)
        self._bytes = self._token_bytes_table(byte_level, added)

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_source(cls, src: TokenizerSource, chat_template: str | None = None) -> HFTokenizer:
        """Build from ``kind="hf"`` (tokenizer.json path or its directory) or ``kind="gguf"``."""
        if src.kind == "gguf":
            return cls._from_gguf_fields(src.fields, chat_template)
        if src.kind == "hf":
            if src.path is None:
                raise ValueError("hf tokenizer source needs a path")
            return cls._from_hf_file(Path(src.path), chat_template)
        raise ValueError(f"HFTokenizer cannot load tokenizer kind {src.kind!r}")

    @classmethod
    def _from_gguf_fields(cls, fields: dict[str, Any], chat_template: str | None) -> HFTokenizer:
        model = fields.get("model", "gpt2")
        tokens: list[str] = list(fields["tokens"])
        vocab = {tok: i for i, tok in enumerate(tokens)}
        if model == "gpt2":
            merges = [tuple(m.split(" ", 1)) for m in fields.get("merges", [])]
            tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, ignore_merges=False))
            tok.pre_tokenizer = _byte_level_pre_tokenizer(fields.get("pre"))
            tok.decoder = decoders.ByteLevel()
        elif model == "llama":
            tok = _sentencepiece_bpe(fields, vocab)
        else:
            raise NotImplementedError(
                f"GGUF tokenizer model {model!r} is not supported (byte-level BPE 'gpt2' and "
                "SentencePiece BPE 'llama' are); pass --tokenizer pointing at the model's tokenizer.json"
            )
        types = list(fields.get("token_type") or [])
        special = [
            AddedToken(t, special=True, normalized=False)
            for t, ty in zip(tokens, types, strict=False)
            if ty == _CONTROL
        ]
        user = [
            AddedToken(t, special=False, normalized=False)
            for t, ty in zip(tokens, types, strict=False)
            if ty == _USER_DEFINED
        ]
        if special:
            tok.add_special_tokens(special)
        if user:
            tok.add_tokens(user)
        eos = [
            fields[k] for k in ("eos_token_id", "eot_token_id", "eom_token_id") if fields.get(k) is not None
        ]
        eos += [vocab[t] for t in _END_OF_TURN if t in vocab and types and types[vocab[t]] == _CONTROL]
        return cls(
            tok,
            bos_token_id=fields.get("bos_token_id"),
            eos_token_ids=eos,
            pad_token_id=fields.get("pad_token_id"),
            chat_template=chat_template or fields.get("chat_template"),
            byte_level=model == "gpt2",
        )

    @classmethod
    def _from_hf_file(cls, path: Path, chat_template: str | None) -> HFTokenizer:
        directory = path if path.is_dir() else path.parent
        file = path / "tokenizer.json" if path.is_dir() else path
        tok = Tokenizer.from_file(str(file))
        cfg = _read_json(directory / "tokenizer_config.json")
        gen = _read_json(directory / "generation_config.json")

        def token_id(value: Any) -> int | None:
            if isinstance(value, dict):
                value = value.get("content")
            return tok.token_to_id(value) if isinstance(value, str) else None

        eos: list[int] = []
        gen_eos = gen.get("eos_token_id")
        eos += gen_eos if isinstance(gen_eos, list) else [gen_eos] if isinstance(gen_eos, int) else []
        if (eid := token_id(cfg.get("eos_token"))) is not None:
            eos.append(eid)
        added = tok.get_added_tokens_decoder()
        eos += [i for i, t in added.items() if t.special and t.content in _END_OF_TURN]
        template = chat_template or cfg.get("chat_template")
        if isinstance(template, list):  # named templates: take the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        if template is None and (directory / "chat_template.jinja").is_file():
            template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
        return cls(
            tok,
            bos_token_id=token_id(cfg.get("bos_token")),
            eos_token_ids=eos,
            pad_token_id=token_id(cfg.get("pad_token")),
            chat_template=template,
            byte_level=_is_byte_level(tok),
        )

    def _token_bytes_table(self, byte_level: bool, added: dict[int, Any]) -> list[bytes]:
        """Bytes of every id, computed once: byte-level tokens through the byte map,
        SentencePiece-style ones with ``▁`` as space and ``<0xNN>`` byte-fallback pieces."""
        byte_of = {c: b for b, c in bytes_to_unicode().items()}
        table: list[bytes] = []
        for i in range(self.vocab_size):
            if i in added:
                table.append(added[i].content.encode("utf-8"))
                continue
            piece = self._tok.id_to_token(i)
            if piece is None:
                table.append(b"")
            elif byte_level and all(c in byte_of for c in piece):
                table.append(bytes(byte_of[c] for c in piece))
            elif len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
                table.append(bytes([int(piece[3:5], 16)]))
            else:
                table.append(piece.replace("\u2581", " ").encode("utf-8"))
        return table

    # ---- Tokenizer protocol ----------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def token_str(self, token_id: int) -> str:
        """The token's text, or ``bytes:\\xNN...`` when it is not valid UTF-8 on its own (OpenAI's form)."""
        return token_text(self._bytes[token_id])

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special

    def token_to_id(self, token: str) -> int | None:
        """Id of a token string (special tokens included), or None."""
        return self._tok.token_to_id(token)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token strings -> ids (chat templates and stop handling look these up)."""
        return {token: i for i in sorted(self._special) if (token := self._tok.id_to_token(i)) is not None}


def _is_byte_level(tok: Tokenizer) -> bool:
    spec = json.loads(tok.to_str()).get("decoder") or {}
    stack = [spec]
    while stack:
        node = stack.pop()
        if node.get("type") == "ByteLevel":
            return True
        stack.extend(node.get("decoders") or [])
    return False


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data if isinstance(data, dict) else {}
