"""Vietnamese text normalization: NFC, invisible characters, Đ, tone-mark placement."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.domain.text import normalize_text


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def test_nfd_input_becomes_nfc() -> None:
    raw = nfd("Nguyễn Thị Hồng Nhung")
    assert raw != "Nguyễn Thị Hồng Nhung"  # the fixture really is decomposed
    text, changed = normalize_text(raw)
    assert text == "Nguyễn Thị Hồng Nhung"
    assert unicodedata.is_normalized("NFC", text)
    assert changed is True


def test_clean_text_is_unchanged() -> None:
    assert normalize_text("Sở Y tế tỉnh Đồng Nai") == ("Sở Y tế tỉnh Đồng Nai", False)


@pytest.mark.parametrize(
    "raw",
    [
        "Đồng\u00a0Nai",  # no-break space
        "Đồng\u202fNai",  # narrow no-break space
        "Đồng\tNai",
        "Đồng\r\nNai",
        "  Đồng   Nai  ",
        "\u3000Đồng Nai",  # ideographic space
    ],
)
def test_whitespace_is_trimmed_and_collapsed(raw: str) -> None:
    assert normalize_text(raw) == ("Đồng Nai", True)


@pytest.mark.parametrize(
    "raw",
    [
        "Đồng\u200b Nai",  # zero-width space
        "Đồ\u200dng Nai",  # zero-width joiner
        "\ufeffĐồng Nai",  # byte-order mark pasted from a file
        "Đồng Na\u00adi",  # soft hyphen
        "Đồng Nai\u200e",  # left-to-right mark
        "Đồng\x00 Nai",  # stray control byte
    ],
)
def test_invisible_characters_are_removed(raw: str) -> None:
    assert normalize_text(raw) == ("Đồng Nai", True)


def test_eth_becomes_d_with_stroke() -> None:
    text, changed = normalize_text("\u00d0ồng Nai, \u00f0ường")
    assert text == "\u0110ồng Nai, \u0111ường"
    assert changed


def test_real_d_with_stroke_is_kept() -> None:
    assert normalize_text("\u0110\u0111") == ("\u0110\u0111", False)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("hoà", "hòa"),
        ("Thanh Hoá", "Thanh Hóa"),
        ("Khánh Hoà", "Khánh Hòa"),
        ("hoạ sĩ", "họa sĩ"),
        ("khoẻ", "khỏe"),
        ("thuỷ", "thủy"),
        ("Thuỵ Khuê", "Thụy Khuê"),
        ("Uỷ ban nhân dân", "Ủy ban nhân dân"),
        ("HOÀ BÌNH", "HÒA BÌNH"),
        ("oà", "òa"),
    ],
)
def test_new_style_tone_moves_to_traditional(raw: str, expected: str) -> None:
    for variant in (raw, nfd(raw)):
        text, changed = normalize_text(variant)
        assert text == expected
        assert changed


@pytest.mark.parametrize(
    "word",
    [
        "hòa",  # already traditional
        "thủy",
        "khỏe",
        "quý",  # qu- onset: u is part of the consonant
        "quỳ",
        "quà",
        "hoàng",  # closed syllables: one placement only
        "tuyết",
        "Quỳnh",
        "khoái",
        "khuya",
        "hoa",  # no tone at all
        "Nguyễn",
    ],
)
def test_tone_placement_leaves_unambiguous_words_alone(word: str) -> None:
    assert normalize_text(word) == (word, False)


def test_tone_fix_touches_each_word_separately() -> None:
    text, _ = normalize_text("Phường Hoà Bình, xã Thuỷ Xuân — quý khách hoàng hôn")
    assert text == "Phường Hòa Bình, xã Thủy Xuân — quý khách hoàng hôn"


@pytest.mark.parametrize("raw", ["", "   ", "\u00a0\u200b"])
def test_blank_becomes_empty(raw: str) -> None:
    text, changed = normalize_text(raw)
    assert text == ""
    assert changed is (raw != "")


@pytest.mark.parametrize(
    "raw",
    [nfd(" Ủy ban nhân dân\u00a0phường Hoà  "), "\u00d0ỗ Thuỷ\u200b", "Sở Y tế"],
)
def test_normalization_is_idempotent(raw: str) -> None:
    once = normalize_text(raw).text
    assert normalize_text(once) == (once, False)


# ---- the fast paths agree with the plain definition

_VIET = "aăâeêioôơuưyAĂÂEÊIOÔƠUƯYđĐÐðqQ \u00a0\t\u200b\u0300\u0301\u0303\u0309\u0323àáảãạèéẻẽẹỳýỷỹỵ"


def _reference(value: str) -> str:
    """normalize_text as first written, step by step, without fast paths."""
    import unicodedata

    from schemas.domain import text as t

    out = "".join(ch for ch in value if not t._is_invisible(ch))
    out = unicodedata.normalize("NFC", out.translate(t._ETH))
    out = t._SPACES.sub(" ", out).strip()
    return t._LETTERS.sub(t._traditional_tone, out)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet=st.sampled_from(_VIET), max_size=24) | st.text(max_size=24))
def test_fast_paths_match_the_definition(value: str) -> None:
    result = normalize_text(value)
    assert result.text == _reference(value)
    assert result.changed == (result.text != value)
