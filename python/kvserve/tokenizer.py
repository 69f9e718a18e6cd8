"""A Hugging Face tokenizer directory read with the `tokenizers` library (no transformers at run time)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tokenizers


def _token_content(value: Any) -> str | None:
    """tokenizer_config.json writes special tokens as a string or as {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def read_chat_template(directory: Path, tokenizer_config: dict[str, Any]) -> str | None:
    """The default chat template: chat_template.jinja (transformers 5), then tokenizer_config.json."""
    jinja = directory / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    template = tokenizer_config.get("chat_template") or _read_json(directory / "chat_template.json").get(
        "chat_template"
    )
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template}
        template = named.get("default") or next(iter(named.values()), None)
    return template


@dataclass(frozen=True, slots=True)
class SpecialTokens:
    bos: str | None = None
    eos: str | None = None
    pad: str | None = None
    unk: str | None = None


class Tokenizer:
    def __init__(self, backend: tokenizers.Tokenizer, special: SpecialTokens, chat_template: str | None) -> None:
        self.backend = backend
        self.special = special
        self.chat_template = chat_template
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        self.bos_token_id = self._id_of(special.bos)
        self.eos_token_id = self._id_of(special.eos)
        self.all_special_ids = frozenset(
            token_id for token_id, token in backend.get_added_tokens_decoder().items() if token.special
        )

    @property
    def special_tokens(self) -> dict[str, str | None]:
        """The special-token variables chat templates read (bos_token, eos_token, ...)."""
        s = self.special
        return {"bos_token": s.bos, "eos_token": s.eos, "pad_token": s.pad, "unk_token": s.unk}

    def _id_of(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    @classmethod
    def from_directory(cls, directory: str | Path) -> Tokenizer:
        directory = Path(directory)
        tokenizer_file = directory / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise FileNotFoundError(f"no tokenizer.json in {directory} (only fast tokenizers are supported)")
        config = _read_json(directory / "tokenizer_config.json")
        special_map = _read_json(directory / "special_tokens_map.json")

        def special_token(name: str) -> str | None:
            return _token_content(config.get(name)) or _token_content(special_map.get(name))

        special = SpecialTokens(
            bos=special_token("bos_token"),
            eos=special_token("eos_token"),
            pad=special_token("pad_token"),
            unk=special_token("unk_token"),
        )
        backend = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        # Some tokenizer.json files carry a truncation or padding setting (sentence-transformers exports do);
        # transformers ignores them unless asked, and so do we: the engine truncates, on request, and says so.
        backend.no_truncation()
        backend.no_padding()
        return cls(backend, special, read_chat_template(directory, config))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_pair(self, first: str, second: str) -> tuple[list[int], list[int]]:
        """Two texts as one sequence with the tokenizer's pair template ([CLS] a [SEP] b [SEP] for BERT);
        returns the token ids and the token type ids."""
        encoding = self.backend.encode(first, second, add_special_tokens=True)
        return encoding.ids, encoding.type_ids

    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(token_ids, skip_special_tokens=skip_special_tokens)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(token_id)
