"""A word-level tokenizer for Shapes World text, built with the ``tokenizers`` library and saved as ``tokenizer.json``.

BAGEL's four special tokens come first (ids 0–3), then every word and punctuation mark the world's templates can
produce. Text is lowercase words separated by spaces with ``.``, ``,`` and ``?`` attached to the previous word, so
decoding joins words with spaces and glues punctuation back. Words outside the vocabulary are an error that names
them, never a silent ``[UNK]``.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers

from hyperbagel.errors import HyperBagelError
from hyperbagel.world.vocab import join_words, split_words

SPECIAL_TOKENS = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>")
UNK = "[unk]"


class ShapesTokenizer:
    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        self.id_to_word = {i: w for w, i in vocab.items()}
        self.bos, self.eos, self.start_of_image, self.end_of_image = (vocab[t] for t in SPECIAL_TOKENS)
        self.unk = vocab[UNK]

    @classmethod
    def build(cls, words: list[str]) -> ShapesTokenizer:
        ordered = list(SPECIAL_TOKENS) + [UNK] + sorted(set(words) - set(SPECIAL_TOKENS) - {UNK})
        tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(ordered)}, unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
        tok.add_special_tokens(list(SPECIAL_TOKENS))
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> ShapesTokenizer:
        path = Path(path)
        if not path.is_file():
            raise HyperBagelError(f"tokenizer not found: {path}")
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as err:
            raise HyperBagelError(f"cannot read tokenizer {path}: {err}") from None

    def check_fits(self, vocab_size: int, special: dict[str, int], source: str = "the tokenizer") -> None:
        """The model can embed every id and shares BAGEL's special tokens (else its words would mean other things)."""
        top = max(self.id_to_word)
        if top >= vocab_size:
            raise HyperBagelError(f"{source} does not match the model: it has id {top}, the model {vocab_size} ids")
        ours = {"bos": self.bos, "eos": self.eos, "start_of_image": self.start_of_image,
                "end_of_image": self.end_of_image}
        if any(special.get(k) != v for k, v in ours.items()):
            raise HyperBagelError(f"{source} does not match the model: special token ids {ours} vs {special}")

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    def to_json(self) -> str:
        return self.tokenizer.to_str()

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Word ids of ``text`` (no special tokens added, like Qwen2's ``encode``)."""
        ids = self.tokenizer.encode(text.lower(), add_special_tokens=False).ids
        if self.unk in ids:
            words = [w for w in split_words(text) if self.tokenizer.token_to_id(w) is None]
            raise HyperBagelError(f"words outside the vocabulary: {sorted(set(words)) or [text]}")
        return ids

    def block(self, text: str) -> list[int]:
        """A text block as BAGEL formats it: ``<|im_start|> text <|im_end|>``."""
        return [self.bos, *self.encode(text), self.eos]

    def decode(self, ids: list[int]) -> str:
        specials = {self.bos, self.eos, self.start_of_image, self.end_of_image}
        # a model's vocabulary may be larger than the tokenizer's: an id with no word reads as [unk]
        return join_words([self.id_to_word.get(i, UNK) for i in ids if i not in specials])
