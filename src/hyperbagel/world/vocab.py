"""The world's closed vocabulary: every word and punctuation mark any template can produce, plus BAGEL's special
tokens, and the pre-tokenisation that splits text into those words and joins it back.

``join_words(split_words(text)) == text`` for every text the world writes (single spaces between words, punctuation
attached to the word before it), and ``split_words(join_words(words)) == words`` for any list of vocabulary words.
"""

from __future__ import annotations

import re

from hyperbagel.world import palette as P
from hyperbagel.world.regions import REGIONS, RELATIONS

SPECIAL_TOKENS: tuple[str, ...] = ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>")
PUNCTUATION: tuple[str, ...] = (".", ",", "?")

# Words that only the templates contribute (captions, prompts, instructions, questions, answers).
_TEMPLATE_WORDS = """
a the and at in on of to into than there is are how many what where more
background object make add remove move turn describe image color shape yes no
"""

_SPLIT = re.compile(r"<\|[a-z_]+\|>|[^\s.,?]+|[.,?]")


def all_words() -> tuple[str, ...]:
    """Special tokens, then punctuation, then every word in sorted order."""
    words = set(_TEMPLATE_WORDS.split())
    words.update(P.COLORS, P.BACKGROUND_NAMES, P.SHAPES, P.SIZES, P.NUMBER_WORDS)
    words.update(P.plural(s) for s in P.SHAPES)
    for phrase in REGIONS + RELATIONS:
        words.update(phrase.split())
    return SPECIAL_TOKENS + PUNCTUATION + tuple(sorted(words))


def split_words(text: str) -> list[str]:
    """Words, punctuation marks and special tokens, in order; whitespace is dropped."""
    return _SPLIT.findall(text)


def join_words(words: list[str]) -> str:
    """The inverse of ``split_words`` on the world's texts: words separated by one space, punctuation attached."""
    out: list[str] = []
    for w in words:
        if out and w not in PUNCTUATION:
            out.append(" ")
        out.append(w)
    return "".join(out)
