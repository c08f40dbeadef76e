"""Natural-language captions of the demo faces and the prompt vocabulary for editing them.

The demo CLIP (issue 4) is trained contrastively on ``(render_face(p), caption(p, rng))`` pairs, so each
caption mentions a random subset of the attributes a face really has, in random order, with synonyms
("blond" / "blonde" / "fair" / "golden hair"; "bald" / "no hair" / "a shaved head"), and never says
anything the face contradicts. :func:`attribute_phrases` lists the prompts a user would type for each
editable attribute together with the oracle dimension that should move, for ``evaluate``.

The renderer does not model gender, so captions use neutral nouns ("a person", "a face", "someone").
Not a port of anything upstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from editing.demo.faces import HAIR_COLOURS, HAIR_STYLES, FaceParams

# Canonical word first: it is drawn most often (CANONICAL_SHARE), so the prompts users type are learnt best.
CANONICAL_SHARE = 0.55
HAIR_COLOUR_WORDS = {
    "black": ("black", "dark", "jet-black"),
    "brown": ("brown", "chestnut", "brunette"),
    "blond": ("blond", "blonde", "fair", "golden"),
    "red": ("red", "ginger", "copper"),
    "grey": ("grey", "gray", "silver"),
    "purple": ("purple", "violet"),
}
EYE_COLOUR_WORDS = {
    "brown": ("brown", "dark brown"),
    "blue": ("blue", "bright blue"),
    "green": ("green",),
    "grey": ("grey", "gray"),
}
# (upper hue bound, name) for the pastel backgrounds, with a margin left unnamed around each bound.
_BACKGROUND_HUES = (
    (0.04, "red"),
    (0.11, "orange"),
    (0.18, "yellow"),
    (0.45, "green"),
    (0.53, "teal"),
    (0.70, "blue"),
    (0.80, "purple"),
    (0.94, "pink"),
    (1.00, "red"),
)
_HUE_MARGIN = 0.015
MAX_FACTS = 6  # keeps captions within a small CLIP's context

# Thresholds: between them an attribute is ambiguous and left unmentioned.
SMILE_MIN = 0.3  # "smiling" from here
FROWN_MAX = -0.3  # "frowning" up to here
NEUTRAL_BAND = (-0.2, 0.15)  # "a neutral expression" inside
OLD_MIN = 0.65
YOUNG_MAX = 0.2
MIDDLE_AGED = (0.38, 0.52)

_PREFIXES = (
    "",
    "",
    "",
    "a photo of ",
    "a picture of ",
    "portrait of ",
    "a portrait of ",
    "a drawing of ",
    "an illustration of ",
    "close-up of ",
    "an image of ",
)
_NOUNS = ("person", "person", "face", "cartoon face", "character", "cartoon person", "someone")
_FACE_NOUNS = ("face", "cartoon face")


@dataclass(frozen=True)
class _Fragment:
    """Ways of saying one fact: before the noun, after "with", or as a participle phrase."""

    adjectives: tuple[str, ...] = ()  # "a smiling person"
    withs: tuple[str, ...] = ()  # "a person with glasses"
    clauses: tuple[str, ...] = ()  # "a person, wearing glasses"
    about_face: bool = False  # e.g. "a wide face": the subject must not itself be "a face"

    def forms(self) -> list[str]:
        named = (("adj", self.adjectives), ("with", self.withs), ("clause", self.clauses))
        return [name for name, options in named if options]


def _word(rng: np.random.Generator, words: tuple[str, ...]) -> str:
    if len(words) == 1 or rng.random() < CANONICAL_SHARE:
        return words[0]
    return words[int(rng.integers(1, len(words)))]


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def background_name(hue: float) -> str | None:
    """The colour word for a background hue, or None near a boundary between two names."""
    low = 0.0
    for high, name in _BACKGROUND_HUES:
        if hue < high:
            inner_low = low + _HUE_MARGIN if low > 0.0 else low  # hues 0 and 1 are both red
            inner_high = high - _HUE_MARGIN if high < 1.0 else high
            return name if inner_low <= hue < inner_high else None
        low = high
    return None


def _smile_fragment(s: float) -> _Fragment | None:
    if s >= 0.6:
        return _Fragment(
            adjectives=("smiling", "happy", "grinning", "cheerful", "laughing"),
            withs=("a big smile", "a smile", "a wide grin", "a happy expression", "an open smile"),
            clauses=("smiling", "grinning", "smiling broadly", "laughing"),
        )
    if s >= SMILE_MIN:
        return _Fragment(
            adjectives=("smiling", "happy", "cheerful"),
            withs=("a smile", "a happy expression"),
            clauses=("smiling",),
        )
    if s <= FROWN_MAX:
        return _Fragment(
            adjectives=("frowning", "sad", "unhappy", "grumpy", "upset"),
            withs=("a frown", "a sad expression", "a downturned mouth"),
            clauses=("frowning", "looking sad", "looking unhappy"),
        )
    if NEUTRAL_BAND[0] < s < NEUTRAL_BAND[1]:
        return _Fragment(
            adjectives=("serious", "expressionless"),
            withs=("a neutral expression", "a straight face", "a serious expression", "a closed mouth"),
            clauses=("looking serious",),
        )
    return None


def _hair_fragment(p: FaceParams, rng: np.random.Generator) -> _Fragment:
    colour = _word(rng, HAIR_COLOUR_WORDS[p.hair_colour])
    if p.hair_style == "bald":
        return _Fragment(
            adjectives=("bald", "hairless"),
            withs=("no hair", "a shaved head", "a bald head"),
            clauses=("bald-headed",),
        )
    if p.hair_style == "mohawk":
        return _Fragment(
            withs=(f"a {colour} mohawk", "a mohawk", f"a spiky {colour} mohawk", "a punk mohawk"),
            clauses=(f"sporting a {colour} mohawk", "wearing a mohawk"),
        )
    style = {"short": ("short",), "long": ("long",), "curly": ("curly", "frizzy")}[p.hair_style]
    style_word = _word(rng, style)
    choice = rng.random()
    if choice < 0.5:
        hair, adjective = f"{style_word} {colour} hair", f"{colour}-haired"
    elif choice < 0.8:
        hair, adjective = f"{colour} hair", f"{colour}-haired"
    else:
        hair, adjective = f"{style_word} hair", f"{style_word}-haired"
    if p.hair_style == "long" and rng.random() < 0.3:
        hair += " down to the shoulders"
    return _Fragment(adjectives=(adjective,), withs=(hair,))


def _fragments(p: FaceParams, rng: np.random.Generator) -> list[_Fragment]:
    """The facts a caption may state about ``p``, each already sampled to be mentioned or not."""
    out: list[_Fragment] = []

    def maybe(probability: float, fragment: _Fragment | None) -> None:
        if fragment is not None and rng.random() < probability:
            out.append(fragment)

    maybe(0.75, _smile_fragment(p.smile))
    maybe(0.8, _hair_fragment(p, rng))
    if p.glasses:
        maybe(
            0.85,
            _Fragment(
                adjectives=("bespectacled",),
                withs=("glasses", "eyeglasses", "spectacles", "dark-rimmed glasses", "a pair of glasses"),
                clauses=("wearing glasses", "wearing spectacles", "wearing eyeglasses"),
            ),
        )
    if p.beard >= 0.02:
        size = ("a full beard", "a thick beard", "a bushy beard") if p.beard > 0.65 else ("a short beard",)
        colour = _word(rng, HAIR_COLOUR_WORDS[p.hair_colour])
        maybe(
            0.85,
            _Fragment(
                adjectives=("bearded",),
                withs=("a beard", *size, f"a {colour} beard", "facial hair"),
                clauses=("sporting a beard",),
            ),
        )
    else:
        maybe(0.1, _Fragment(adjectives=("clean-shaven", "beardless")))
    if p.lipstick:
        maybe(
            0.8,
            _Fragment(
                withs=("red lipstick", "lipstick", "red lips", "bright red lips"),
                clauses=("wearing lipstick", "wearing red lipstick"),
            ),
        )
    eyes = _word(rng, EYE_COLOUR_WORDS[p.eye_colour])
    maybe(0.35, _Fragment(adjectives=(f"{eyes}-eyed",), withs=(f"{eyes} eyes",)))
    if p.skin_tone < 0.3:
        maybe(0.3, _Fragment(adjectives=("pale", "light-skinned"), withs=("pale skin", "light skin")))
    elif 0.4 < p.skin_tone < 0.6:
        maybe(0.3, _Fragment(adjectives=("tanned",), withs=("tan skin", "olive skin")))
    elif p.skin_tone > 0.7:
        maybe(0.3, _Fragment(adjectives=("dark-skinned",), withs=("dark skin", "deep brown skin")))
    if p.face_width < -0.45:
        maybe(
            0.25,
            _Fragment(adjectives=("thin-faced",), withs=("a narrow face", "a thin face"), about_face=True),
        )
    elif p.face_width > 0.45:
        maybe(
            0.25,
            _Fragment(
                adjectives=("round-faced",),
                withs=("a wide face", "a broad face", "a round face"),
                about_face=True,
            ),
        )
    if p.age > OLD_MIN:
        maybe(
            0.5,
            _Fragment(
                adjectives=("old", "elderly", "wrinkled", "aged"),
                withs=("wrinkles", "a wrinkled face", "deep wrinkles"),
                about_face=True,
            ),
        )
    elif p.age < YOUNG_MAX:
        maybe(0.4, _Fragment(adjectives=("young", "youthful"), withs=("smooth skin",)))
    elif MIDDLE_AGED[0] < p.age < MIDDLE_AGED[1]:
        maybe(0.25, _Fragment(adjectives=("middle-aged",)))
    name = background_name(p.background_hue)
    if name is not None:
        maybe(
            0.25,
            _Fragment(
                clauses=(
                    f"on {_article(name)} background",
                    f"against {_article(name)} backdrop",
                    f"in front of {_article(name)} wall",
                ),
            ),
        )
    return out


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def caption(params: FaceParams, rng: np.random.Generator) -> str:
    """One random natural-language description of a face.

    Args:
        params: the face being described.
        rng: generator for the choice of facts, words and sentence shape (advanced in place).
    Returns:
        A lower-case sentence such as "portrait of a person with long purple hair, wearing glasses,
        frowning". Every fact stated is true of ``params``; ambiguous values are left out.
    """
    fragments = _fragments(params, rng)
    if not fragments:
        return _pick(rng, ("a photo of ", "a drawing of ", "")) + _article(
            _pick(rng, ("cartoon face", "face"))
        )
    order = rng.permutation(len(fragments))[:MAX_FACTS]
    fragments = [fragments[i] for i in order]

    if rng.random() < 0.12:  # tag style: "blond hair, glasses, smiling, portrait"
        tags = []
        for f in fragments:
            options = f.adjectives if f.adjectives and (rng.random() < 0.4 or not f.withs) else f.withs
            tags.append(re.sub(r"^an? ", "", _pick(rng, options or f.clauses)))
        return ", ".join(tags) + _pick(rng, ("", ", cartoon portrait", ", face", ", portrait"))

    adjectives: list[str] = []
    withs: list[str] = []
    clauses: list[str] = []
    for f in fragments:
        forms = f.forms()
        if len(adjectives) >= 2 and len(forms) > 1:
            forms = [x for x in forms if x != "adj"]
        form = _pick(rng, forms)
        if form == "adj":
            adjectives.append(_pick(rng, f.adjectives))
        elif form == "with":
            withs.append(_pick(rng, f.withs))
        else:
            clauses.append(_pick(rng, f.clauses))

    noun = _pick(rng, _NOUNS)
    if (noun in _FACE_NOUNS and any(f.about_face for f in fragments)) or (noun == "someone" and adjectives):
        noun = "person"
    subject = "someone" if noun == "someone" else _article(" ".join([*adjectives, noun]))
    sentence = _pick(rng, _PREFIXES) + subject
    if withs:
        who = noun not in _FACE_NOUNS and rng.random() < 0.2
        sentence += (" who has " if who else " with ") + _join(withs)
    if clauses:
        sentence += ", " + ", ".join(clauses)
    if rng.random() < 0.15:
        sentence += "."
    return sentence


@dataclass(frozen=True)
class AttributePhrase:
    """The prompts for one editing target and how the attribute oracle sees it move."""

    key: str  # short name, e.g. "purple_hair"
    prompts: tuple[str, ...]  # what a user would type; the first is canonical
    attribute: str  # the FaceParams field the edit changes
    target: float | str | bool  # the value the edit moves towards
    vector_dim: str  # the VECTOR_DIMS name that should move (see editing.demo.faces)
    direction: int  # +1 if vector_dim should increase, -1 if it should decrease


def attribute_phrases() -> dict[str, AttributePhrase]:
    """The prompts users type for each editable attribute; every prompt occurs verbatim in captions.

    Returns:
        ``{key: AttributePhrase}``. Keys: smile, frown, glasses, beard, clean_shaven, lipstick, old,
        young, ``<colour>_hair`` for each of HAIR_COLOURS, and each hair style (``bald``, ``long_hair``,
        ``short_hair``, ``curly_hair``, ``mohawk``).
    """
    phrases = [
        AttributePhrase(
            "smile", ("smiling", "smile", "a smiling face", "happy", "grinning"), "smile", 1.0, "smile", 1
        ),
        AttributePhrase("frown", ("frowning", "a frown", "sad", "unhappy"), "smile", -1.0, "smile", -1),
        AttributePhrase(
            "glasses",
            ("glasses", "wearing glasses", "eyeglasses", "spectacles"),
            "glasses",
            True,
            "glasses",
            1,
        ),
        AttributePhrase(
            "beard", ("beard", "bearded", "a full beard", "facial hair"), "beard", 1.0, "beard", 1
        ),
        AttributePhrase("clean_shaven", ("clean-shaven", "beardless"), "beard", 0.0, "beard", -1),
        AttributePhrase(
            "lipstick",
            ("lipstick", "red lipstick", "red lips", "wearing lipstick"),
            "lipstick",
            True,
            "lipstick",
            1,
        ),
        AttributePhrase("old", ("old", "elderly", "wrinkles", "a wrinkled face"), "age", 1.0, "age", 1),
        AttributePhrase("young", ("young", "youthful"), "age", 0.0, "age", -1),
    ]
    for colour in HAIR_COLOURS:
        prompts = tuple(f"{w} hair" for w in HAIR_COLOUR_WORDS[colour])
        phrases.append(
            AttributePhrase(f"{colour}_hair", prompts, "hair_colour", colour, f"hair_colour={colour}", 1)
        )
    style_prompts = {
        "bald": ("bald", "no hair", "a shaved head", "a bald head"),
        "short": ("short hair",),
        "long": ("long hair",),
        "curly": ("curly hair", "frizzy hair"),
        "mohawk": ("mohawk", "a mohawk"),
    }
    for style in HAIR_STYLES:
        key = style if style in ("bald", "mohawk") else f"{style}_hair"
        phrases.append(
            AttributePhrase(key, style_prompts[style], "hair_style", style, f"hair_style={style}", 1)
        )
    return {p.key: p for p in phrases}
