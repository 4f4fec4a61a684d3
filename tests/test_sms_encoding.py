"""GSM 03.38 / UCS-2 detection, segment counts and normalization on French texts."""

from __future__ import annotations

import pytest

from channels.sms_encoding import analyze, cost, normalize, with_stop_mention


def test_french_accents_in_gsm7_basic_stay_gsm():
    info = analyze("Très bientôt ? Non : à très vite, Éloïse !".replace("ô", "o").replace("ï", "i"))
    assert info.encoding == "GSM-7" and info.segments == 1


@pytest.mark.parametrize("letter", ["ê", "â", "î", "ô", "û", "ë", "ï", "ç", "œ"])
def test_letters_outside_gsm_force_ucs2_and_are_reported(letter):
    info = analyze(f"Bonjour, voici un texte {letter} ici")
    assert info.encoding == "UCS-2" and info.ucs2_chars == [letter]


def test_babel_price_is_normalized_to_gsm():
    text = normalize("Dès 12,50\u00a0€ \u2013 « J\u2019en profite » \u2026 15\u202f%")
    assert text == 'Dès 12,50 € - "J\'en profite" ... 15 %'
    info = analyze(text)
    assert info.encoding == "GSM-7"
    assert info.length == len(text) + 1  # € is in the extension table: 2 septets


def test_segment_boundaries():
    assert analyze("a" * 160).segments == 1
    assert analyze("a" * 161).segments == 2
    assert analyze("a" * 306).segments == 2 and analyze("a" * 307).segments == 3
    assert analyze("€" * 80).segments == 1 and analyze("€" * 81).segments == 2
    assert analyze("ê" * 70).segments == 1 and analyze("ê" * 71).segments == 2
    assert analyze("ê" * 134).segments == 2 and analyze("ê" * 135).segments == 3


def test_french_marketing_text_counts():
    fr = "Bonjour Hélène ! Profitez de -20 % sur la crème brûlée jusqu'à dimanche. Code ETE20"
    info = analyze(with_stop_mention(fr, "STOP au 36111"))
    assert info.encoding == "UCS-2" and info.ucs2_chars == ["û"]  # è is GSM-7, û is not
    assert info.segments == 2  # 98 chars > 70 in UCS-2
    assert cost(info.segments, 0.045) == pytest.approx(0.09)


def test_stop_mention_added_once():
    assert with_stop_mention("Promo", "STOP au 36111") == "Promo\nSTOP au 36111"
    assert with_stop_mention("Promo STOP au 36111", "STOP au 36111") == "Promo STOP au 36111"
