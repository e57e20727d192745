"""Vietnamese text normalization.

TCVN 6909 requires Unicode NFC between state bodies, but portals still send NFD (macOS
input, some IMEs), non-breaking and zero-width spaces pasted from Word or the web, the
Icelandic capital eth Ð (U+00D0) in place of Đ (U+0110), and both tone-mark styles.

Tone-mark placement: we write the *traditional* style for the open syllables ending in
oa, oe, uy — ``hòa``, ``khỏe``, ``thủy`` (not ``hoà``, ``khoẻ``, ``thuỷ``). Both styles are
correct Vietnamese, but a bus that joins on names needs one: we follow the spelling of the
official administrative registries (the statistics office's unit lists and Decision
19/2025/QĐ-TTg write Khánh Hòa, Thanh Hóa, Thủy, Ủy ban), so standardized names compare
equal to the reference data. Only those three open-syllable cases differ between the
styles; closed syllables (hoàng, tuyết, quỳnh) and "qu"/"gi" onsets (quý, quà) are already
unambiguous and are left alone.

Legacy 8-bit encodings (TCVN3, VNI) are not decoded here: they cannot be told apart from
valid text reliably without the source system's declaration.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import NamedTuple

__all__ = ["NormalizedText", "normalize_text"]

# Combining tone marks in NFD: grave (huyền), acute (sắc), tilde (ngã), hook (hỏi), dot (nặng).
_TONES = "\u0300\u0301\u0303\u0309\u0323"

# On an NFD word, the "new style" tone on the last vowel of an open oa/oe/uy syllable.
# The look-behind keeps "qu" onsets (quý, quà), where u belongs to the consonant.
_NEW_STYLE = re.compile(rf"(?<![qQ])([oO])([aAeE])([{_TONES}])$|(?<![qQ])([uU])([yY])([{_TONES}])$")

# The same endings in NFC, at the end of a word: the words the rewrite may change.
_NEW_STYLE_CANDIDATE = re.compile("(?:[oO][àáảãạÀÁẢÃẠèéẻẽẹÈÉẺẼẸ]|[uU][ỳýỷỹỵỲÝỶỸỴ])(?![^\\W\\d_])")

_LETTERS = re.compile(r"[^\W\d_]+")
_SPACES = re.compile(r"\s+")

# Characters that look like Đ/đ but are the Icelandic eth; Vietnamese never uses eth.
_ETH = str.maketrans({"\u00d0": "\u0110", "\u00f0": "\u0111"})


class NormalizedText(NamedTuple):
    text: str
    changed: bool


def _is_invisible(ch: str) -> bool:
    # Cf covers zero-width space/joiners, word joiner, BOM, soft hyphen and bidi marks;
    # Cc covers stray control bytes. Whitespace controls (tab, newline) are kept for the
    # collapse step so that "a\tb" becomes "a b", not "ab".
    category = unicodedata.category(ch)
    return category == "Cf" or (category == "Cc" and not ch.isspace())


def _traditional_tone(match: re.Match[str]) -> str:
    word = unicodedata.normalize("NFD", match.group(0))
    fixed = _NEW_STYLE.sub(
        lambda m: (
            m.group(1) + m.group(3) + m.group(2)
            if m.group(1) is not None
            else m.group(4) + m.group(6) + m.group(5)
        ),
        word,
    )
    return unicodedata.normalize("NFC", fixed)


# Codes, procedure names, unit and place names repeat on most events: a bounded cache
# of the pure function makes them free. Values (names included) stay in this process's
# memory only, as they already are while the event is processed.
@functools.lru_cache(maxsize=1 << 15)
def normalize_text(value: str) -> NormalizedText:
    """NFC, no invisible characters, single ASCII spaces, Đ not Ð, traditional tone marks.

    It runs on every text field of every event, so the common cases take fast paths
    (a test checks them against the plain step-by-step definition on random text):
    printable text has no invisible characters or odd spaces to remove, ASCII text needs
    no Unicode normalization, and only a word ending in a new-style oa/oe/uy vowel
    needs the tone-mark rewrite.
    """
    text = value if value.isprintable() else "".join(ch for ch in value if not _is_invisible(ch))
    ascii_only = text.isascii()
    if not ascii_only:
        text = unicodedata.normalize("NFC", text.translate(_ETH))
    if "  " in text or not text.isprintable() or text[:1].isspace() or text[-1:].isspace():
        text = _SPACES.sub(" ", text).strip()
    if not ascii_only and _NEW_STYLE_CANDIDATE.search(text):
        text = _LETTERS.sub(_traditional_tone, text)
    return NormalizedText(text, text != value)
