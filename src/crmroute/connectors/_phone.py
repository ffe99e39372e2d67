"""The forms a caller's number may be stored in, for CRMs that compare text.

``phone_forms("+1 415 555 2671", "US")`` gives E.164 ``+14155552671``,
national ``(415) 555-2671``, national digits ``4155552671``, international
digits ``14155552671``, and ``last(7)`` for ends-with searches. A number
``phonenumbers`` cannot parse keeps its digits only. Each connector picks
the forms its vendor's search needs (see the vendor's module docstring).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

_NON_DIGITS = re.compile(r"\D+")


@dataclass(frozen=True)
class PhoneForms:
    raw: str
    e164: str = ""  # +14155552671
    national: str = ""  # (415) 555-2671, as the region writes it
    international: str = ""  # +1 415-555-2671
    national_digits: str = ""  # 4155552671 (national significant number)
    digits: str = ""  # 14155552671 (country code + national), or the raw digits

    @property
    def valid(self) -> bool:
        return bool(self.e164)

    def last(self, n: int) -> str:
        """The last ``n`` digits, for ends-with / contains searches."""
        return (self.national_digits or self.digits)[-n:]

    def matches(self, stored: object) -> bool:
        """Whether a stored phone is this number, whatever its punctuation and prefix.

        CRMs that compare text find candidates by a looser search (a suffix, a
        LIKE); this check keeps the real ones: the stored digits must end with
        the national number, after nothing or a known prefix (trunk ``0``,
        country code, ``00``/``011`` + country code, country code + trunk).
        """
        digits = digits_of(stored if isinstance(stored, str) else "")
        if not digits:
            return False
        if not self.valid:
            return digits == self.digits
        national = self.national_digits
        if not digits.endswith(national):
            return False
        prefix = digits[: len(digits) - len(national)]
        country = self.digits[: len(self.digits) - len(national)]
        written = digits_of(self.national)
        trunk = written[: -len(national)] if written.endswith(national) else ""
        return prefix in {"", trunk, "0", country, country + trunk, country + "0", "00" + country, "011" + country}

    def distinct(self, *names: str) -> list[str]:
        """The named forms (``"e164"``, ``"national"``...), non-empty and without repeats, in order."""
        seen: list[str] = []
        for name in names:
            value = getattr(self, name)
            if value and value not in seen:
                seen.append(value)
        return seen


def digits_of(text: str) -> str:
    return _NON_DIGITS.sub("", text or "")


def phone_forms(number: str, region: str = "US") -> PhoneForms:
    raw = (number or "").strip()
    digits = digits_of(raw)
    try:
        parsed = phonenumbers.parse(raw, region.upper())
    except phonenumbers.NumberParseException:
        return PhoneForms(raw=raw, digits=digits)
    if not phonenumbers.is_possible_number(parsed):
        return PhoneForms(raw=raw, digits=digits)
    national_digits = phonenumbers.national_significant_number(parsed)
    return PhoneForms(
        raw=raw,
        e164=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164),
        national=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL),
        international=phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL),
        national_digits=national_digits,
        digits=f"{parsed.country_code}{national_digits}",
    )


def written_forms(forms: PhoneForms) -> list[str]:
    """The ways people commonly type ``forms`` into a text field, most common first, without repeats.

    For CRMs whose search compares the stored text exactly (one value per
    condition): E.164 ``+14155552671``, national ``(415) 555-2671``,
    international ``+1 415-555-2671``, its national part ``415-555-2671``, the
    digits with and without country code, dotted ``415.555.2671``, with a
    leading country code ``1-415-555-2671`` and ``+1 (415) 555-2671``, then
    spaced variants. An unparsable number gives its raw text and its digits.
    """
    if not forms.valid:
        return [v for v in dict.fromkeys([forms.raw, forms.digits]) if v]
    country = forms.digits[: len(forms.digits) - len(forms.national_digits)]
    part = forms.international.split(" ", 1)[1] if " " in forms.international else forms.national_digits
    spaced = part.replace("-", " ")
    dotted = spaced.replace(" ", ".")
    candidates = [
        forms.e164, forms.national, forms.international, part, forms.digits, forms.national_digits,
        dotted, f"{country}-{part}", f"+{country} {forms.national}",
        f"{country} {forms.national}", spaced, f"+{country} {spaced}", f"{country}.{dotted}", f"+{country}.{dotted}",
    ]  # fmt: skip
    return [v for v in dict.fromkeys(candidates) if v]
