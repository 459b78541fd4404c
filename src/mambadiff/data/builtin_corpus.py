"""The built-in paraphrase corpus: procedurally generated question pairs, our own.

Why: the project must run (demo, tests, CI) without any external data. The corpus is small,
lower-case, with punctuation as separate tokens, and shaped like QQP duplicate questions, so the
same code path serves it and real data.

Design
------
*Intents.* 16 question intents (learn a skill, fastest way to learn, time needed, books, become a
<job>, salary, places to visit, living somewhere, quit a habit, improve something, make money,
difference between two things, what to buy, start a business, what a job is like, why a place is
so <adjective>). Each intent has 4 surface *forms* (templates) that say the same thing with
different wh-words, verbs and clause orders, e.g. for "learn fast":

    0  how can i learn {skill} quickly [{purpose}] ?
    1  what is the fastest way to learn {skill} [{purpose}] ?
    2  [{purpose} ,] how do i pick up {skill} as fast as possible ?
    3  is there a quick way to learn {skill} [{purpose}] ?

``[...]`` is an optional segment, present only when its slot is filled.

*Slots.* Plain slots (skill, job, place, habit, ...) are copied unchanged into the target.
Paired slots hold one concept with two wordings (``"for free" / "without paying"``,
``"a month" / "thirty days"``, ``"expensive" / "costly"``); the source uses one wording at random
and the target *always* the other one (a synonym rewrite the model can learn exactly).

*Mapping.* An instance (intent + slot concepts) is rendered as a source in form ``i`` and a
target in form ``(i + 1) mod 4``, so the rewrite is a fixed function of the source. With
probability ``vary`` (default 0.1) the target form is instead drawn from the other three forms:
a limited amount of one-to-many variation, as in real paraphrase data.

*Splits.* Instances (not sentences) are split: every instance belongs to exactly one of
train / valid / test, so no sentence of valid/test, source or target, occurs in another split;
the model is tested on new slot combinations. Each split draws, round-robin over its
instances, distinct (form, wording) variants. Sources are unique across the whole corpus.

*Size.* 3,284 instances and 24,032 distinct sources; every sentence has 6 to 16 whitespace
tokens (mean 11); the vocabulary is 422 words. With bert-base-uncased the longest pair lays out
in 39 positions, so ``seq_len: 40`` (or 48) holds everything without truncation. Default sizes:
10,000 / 500 / 500 pairs (generated in well under a second).

*Difficulty.* Copying the source scores a sentence-BLEU of 0.12 against the reference (0.09 on
bert-decoded text, where ``?`` sticks to the last word; DiffuSeq's definition: nltk
``sentence_bleu`` + ``SmoothingFunction().method4`` on whitespace tokens; the tests require
< 0.25; QQP's copy baseline is 0.22). Emitting the canonical rewrite matches the reference
exactly for about 93% of pairs (``1 - vary + vary / 3``), so a model that learns the mapping
beats the copy baseline by a wide margin.

Deterministic: the same arguments give the same corpus (``random.Random(seed)`` only, no hashing
of sets or dicts).
"""
from __future__ import annotations

import itertools
import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from mambadiff.fileio import atomic_write_text

__all__ = [
    "generate_paraphrase_corpus",
    "write_builtin_corpus",
    "corpus_capacity",
    "DEFAULT_SIZES",
]

DEFAULT_SIZES = {"train": 10000, "valid": 500, "test": 500}
MIN_WORDS, MAX_WORDS = 6, 16

# ---------------------------------------------------------------------------------------------
# Lexicon
# ---------------------------------------------------------------------------------------------
SKILLS = [
    "python", "java", "javascript", "guitar", "piano", "violin", "french", "spanish", "german",
    "japanese", "chinese", "chess", "cooking", "swimming", "drawing", "painting", "photography",
    "calculus", "statistics", "physics", "chemistry", "economics", "accounting", "machine learning",
    "data science", "web design", "public speaking", "creative writing", "yoga", "singing",
]
JOBS = [
    "a doctor", "a nurse", "a pilot", "a lawyer", "a teacher", "a chef", "a writer", "a photographer",
    "an architect", "an accountant", "a police officer", "a firefighter", "a software engineer",
    "a data scientist", "a web developer", "a game designer", "a journalist", "an actor", "a dentist",
    "a pharmacist", "a psychologist", "an electrician",
]
PLACES = [
    "india", "china", "japan", "germany", "france", "canada", "australia", "brazil", "mexico", "italy",
    "spain", "the us", "the uk", "russia", "singapore", "dubai", "london", "new york", "paris", "tokyo",
]
HABITS = [
    "smoking", "procrastinating", "overthinking", "eating junk food", "biting my nails", "staying up late",
    "drinking soda", "checking my phone", "wasting time online", "playing video games all day",
    "watching too much tv", "eating too much sugar", "skipping breakfast", "being lazy",
    "worrying so much", "spending too much money",
]
IMPROVABLES = [
    "my english", "my memory", "my writing skills", "my handwriting", "my concentration", "my sleep",
    "my confidence", "my vocabulary", "my credit score", "my posture", "my communication skills",
    "my typing speed", "my grades", "my diet", "my stamina", "my productivity",
]
THINGS = [
    "laptop", "phone", "camera", "tablet", "smartwatch", "bike", "car", "tv", "gaming pc", "printer",
    "monitor", "keyboard", "microwave", "vacuum cleaner",
]
BUSINESSES = [
    "a youtube channel", "a blog", "a podcast", "a small business", "a startup", "an online store",
    "a restaurant", "a bakery", "a clothing brand", "a coffee shop", "a food truck", "a travel agency",
    "a gym", "a mobile app",
]
# Things that can be compared, by category (a difference question pairs two of one category).
COMPARABLES = {
    "programming": ["python", "java", "javascript", "ruby", "php", "swift", "kotlin", "rust"],
    "instrument": ["guitar", "piano", "violin", "drums", "flute"],
    "language": ["french", "spanish", "german", "japanese", "chinese", "italian", "korean"],
    "science": ["physics", "chemistry", "biology", "statistics", "economics", "psychology"],
    "device": ["laptop", "tablet", "desktop", "smartphone"],
}

# Paired wordings: (wording 0, wording 1) of one concept.
LEARN_MANNER = [
    ("at home", "from home"), ("online", "on the internet"), ("for free", "without paying"),
    ("by myself", "on my own"), ("in my free time", "in my spare time"),
    ("as a beginner", "with no experience"), ("as an adult", "as a grown up"),
    ("without a teacher", "without a tutor"), ("step by step", "gradually"),
]
LEARN_PURPOSE = [
    ("for an exam", "before an exam"), ("for an interview", "before an interview"),
    ("for work", "for my job"), ("for school", "for my classes"),
]
DURATIONS = [
    ("a week", "seven days"), ("two weeks", "fourteen days"), ("a month", "thirty days"),
    ("three months", "ninety days"), ("six months", "half a year"), ("a year", "twelve months"),
    ("a weekend", "two days"), ("one summer", "a single summer"),
]
BOOK_AUDIENCE = [
    ("for beginners", "for a newcomer"), ("for kids", "for children"), ("for experts", "for advanced readers"),
    ("for self study", "to study alone"),
]
CAREER_CONTEXT = [
    ("after college", "after finishing college"), ("without a degree", "with no degree"),
    ("in my thirties", "after turning thirty"), ("in the us", "in the united states"),
    ("in the uk", "in britain"), ("with a bad gpa", "with low grades"),
]
TRIP = [
    ("for a week", "for seven days"), ("on a budget", "without spending much"), ("in winter", "during the winter"),
    ("with kids", "with children"), ("for the first time", "as a newcomer"),
]
RESIDENT = [
    ("as a student", "as a college student"), ("as a foreigner", "as an expat"),
    ("with a family", "with kids"), ("on a low income", "on a small salary"),
    ("as a retiree", "after retirement"),
]
HABIT_METHOD = [
    ("naturally", "without medicine"), ("for good", "forever"), ("quickly", "fast"), ("without help", "by myself"),
]
IMPROVE_TEMPO = [
    ("quickly", "fast"), ("at home", "from home"), ("every day", "daily"), ("in a month", "within four weeks"),
    ("naturally", "without any pills"),
]
MONEY_WAY = [
    ("online", "on the internet"), ("from home", "at home"), ("as a student", "while studying"),
    ("fast", "quickly"), ("with no investment", "without investing anything"),
    ("in my free time", "in my spare time"), ("as a teenager", "as a teen"), ("on the side", "as a side job"),
]
BUDGET = [(f"under {n} dollars", f"below {n} dollars") for n in (100, 200, 300, 500, 1000)]
BUY_PURPOSE = [
    ("for students", "for college students"), ("for gaming", "for playing games"),
    ("for programming", "for coding"), ("for travel", "for traveling"), ("for school", "for my classes"),
]
START_CONTEXT = [
    ("with no money", "without any money"), ("as a student", "while in college"), ("from scratch", "from zero"),
    ("with no experience", "as a total beginner"), ("in a small town", "in a small city"),
]
PLACE_ADJECTIVE = [
    ("expensive", "costly"), ("crowded", "full of people"), ("rich", "wealthy"), ("polluted", "dirty"),
    ("popular with tourists", "famous among tourists"), ("safe", "secure"), ("big", "large"),
]


# ---------------------------------------------------------------------------------------------
# Intents
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Slot:
    name: str
    values: Sequence  # plain: str; paired: (str, str)
    paired: bool = False
    optional: bool = False  # adds the "absent" concept (empty string)

    def concepts(self) -> list:
        return ([None] if self.optional else []) + list(self.values)


@dataclass(frozen=True)
class Intent:
    name: str
    forms: tuple[str, ...]
    slots: tuple[Slot, ...]
    allowed: Callable[[dict], bool] | None = field(default=None, compare=False)


def _same_category_distinct(c: dict) -> bool:
    a, b = c["a"], c["b"]
    return a != b and any(a in items and b in items for items in COMPARABLES.values())


_ALL_COMPARABLES = [x for items in COMPARABLES.values() for x in items]
_ALL_COMPARABLES = list(dict.fromkeys(_ALL_COMPARABLES))  # unique, order kept

INTENTS: tuple[Intent, ...] = (
    Intent("learn", (
        "how can i learn {skill} [{manner}] ?",
        "what is the best way to learn {skill} [{manner}] ?",
        "i want to study {skill} [{manner}] . where do i begin ?",
        "[{manner} ,] which method works best for learning {skill} ?",
    ), (Slot("skill", SKILLS), Slot("manner", LEARN_MANNER, paired=True, optional=True))),
    Intent("learn_fast", (
        "how can i learn {skill} quickly [{purpose}] ?",
        "what is the fastest way to learn {skill} [{purpose}] ?",
        "[{purpose} ,] how do i pick up {skill} as fast as possible ?",
        "is there a quick way to learn {skill} [{purpose}] ?",
    ), (Slot("skill", SKILLS), Slot("purpose", LEARN_PURPOSE, paired=True, optional=True))),
    Intent("duration", (
        "is it possible to learn {skill} in {dur} ?",
        "can someone become good at {skill} within {dur} ?",
        "is {dur} enough time to learn {skill} ?",
        "how far can i get with {skill} in {dur} ?",
    ), (Slot("skill", SKILLS), Slot("dur", DURATIONS, paired=True))),
    Intent("books", (
        "what are the best books on {skill} [{aud}] ?",
        "which book should i read to learn {skill} [{aud}] ?",
        "can you recommend a good {skill} book [{aud}] ?",
        "[{aud} ,] what is a must read book about {skill} ?",
    ), (Slot("skill", SKILLS), Slot("aud", BOOK_AUDIENCE, paired=True, optional=True))),
    Intent("become", (
        "how do i become {job} [{ctx}] ?",
        "what does it take to be {job} [{ctx}] ?",
        "[{ctx} ,] what steps should i follow to become {job} ?",
        "what is the path to becoming {job} [{ctx}] ?",
    ), (Slot("job", JOBS), Slot("ctx", CAREER_CONTEXT, paired=True, optional=True))),
    Intent("salary", (
        "how much does {job} earn in {place} ?",
        "what is the average salary in {place} for {job} ?",
        "in {place} , how much money does {job} make ?",
        "what do people working as {job} get paid in {place} ?",
    ), (Slot("job", JOBS), Slot("place", PLACES))),
    Intent("visit", (
        "what are the best places to visit in {place} [{trip}] ?",
        "[{trip} ,] which places should i see in {place} ?",
        "i am going to {place} [{trip}] . what should i visit ?",
        "what are the must see spots in {place} [{trip}] ?",
    ), (Slot("place", PLACES), Slot("trip", TRIP, paired=True, optional=True))),
    Intent("live", (
        "what is it like to live in {place} [{who}] ?",
        "[{who} ,] how is life in {place} ?",
        "is {place} a good place to live [{who}] ?",
        "what are the pros and cons of living in {place} [{who}] ?",
    ), (Slot("place", PLACES), Slot("who", RESIDENT, paired=True, optional=True))),
    Intent("habit", (
        "how can i stop {habit} [{method}] ?",
        "what is the best way to quit {habit} [{method}] ?",
        "[{method} ,] how do i drop the habit of {habit} ?",
        "i keep {habit} . how do i stop [{method}] ?",
    ), (Slot("habit", HABITS), Slot("method", HABIT_METHOD, paired=True, optional=True))),
    Intent("improve", (
        "how can i improve {x} [{tempo}] ?",
        "what are some ways to improve {x} [{tempo}] ?",
        "[{tempo} ,] what should i do to make {x} better ?",
        "i struggle with {x} . how can i fix it [{tempo}] ?",
    ), (Slot("x", IMPROVABLES), Slot("tempo", IMPROVE_TEMPO, paired=True, optional=True))),
    Intent("money", (
        "how can i make money {way} [in {place}] ?",
        "what are the best ways to earn money {way} [in {place}] ?",
        "[in {place} ,] how do people make money {way} ?",
        "what can i do to earn an income {way} [in {place}] ?",
    ), (Slot("way", MONEY_WAY, paired=True), Slot("place", PLACES, optional=True))),
    Intent("difference", (
        "what is the difference between {a} and {b} ?",
        "how is {a} different from {b} ?",
        "how do {a} and {b} differ ?",
        "in what ways are {a} and {b} not the same ?",
    ), (Slot("a", _ALL_COMPARABLES), Slot("b", _ALL_COMPARABLES)), _same_category_distinct),
    Intent("buy", (
        "which is the best {thing} {budget} [{purpose}] ?",
        "what {thing} should i buy {budget} [{purpose}] ?",
        "[{purpose} ,] can you suggest a good {thing} {budget} ?",
        "i need a {thing} [{purpose}] . what is good {budget} ?",
    ), (Slot("thing", THINGS), Slot("budget", BUDGET, paired=True),
        Slot("purpose", BUY_PURPOSE, paired=True, optional=True))),
    Intent("start", (
        "how do i start {biz} [{ctx}] ?",
        "what are the steps to start {biz} [{ctx}] ?",
        "[{ctx} ,] what do i need to open {biz} ?",
        "i want to launch {biz} [{ctx}] . what comes first ?",
    ), (Slot("biz", BUSINESSES), Slot("ctx", START_CONTEXT, paired=True, optional=True))),
    Intent("job_life", (
        "what is it like to work as {job} [in {place}] ?",
        "how does it feel to be {job} [in {place}] ?",
        "[in {place} ,] what is a typical day like for {job} ?",
        "what is life like for {job} [in {place}] ?",
    ), (Slot("job", JOBS), Slot("place", PLACES, optional=True))),
    Intent("why_place", (
        "why is {place} so {adj} ?",
        "what makes {place} so {adj} ?",
        "what is the reason that {place} is so {adj} ?",
        "how come {place} is so {adj} ?",
    ), (Slot("place", PLACES), Slot("adj", PLACE_ADJECTIVE, paired=True))),
)

_OPTIONAL_RE = re.compile(r"\[([^\[\]]*)\]")
_SLOT_RE = re.compile(r"\{(\w+)\}")


def _render(template: str, values: dict[str, str]) -> str:
    """Fill ``{slot}``s; keep an ``[optional]`` segment only if all its slots are non-empty."""
    def optional(m: re.Match) -> str:
        inner = m.group(1)
        return inner if all(values[s] for s in _SLOT_RE.findall(inner)) else ""

    text = _OPTIONAL_RE.sub(optional, template)
    text = _SLOT_RE.sub(lambda m: values[m.group(1)], text)
    return " ".join(text.split())


# An instance: (intent index, concept per slot). A variant of it: (form, wording bit per paired slot).
Instance = tuple[int, tuple]


def _instances() -> list[Instance]:
    out = []
    for k, intent in enumerate(INTENTS):
        for combo in itertools.product(*(s.concepts() for s in intent.slots)):
            if intent.allowed is not None and not intent.allowed({s.name: c for s, c in zip(intent.slots, combo)}):
                continue
            out.append((k, combo))
    return out


def _variants(inst: Instance) -> list[tuple[int, tuple[int, ...]]]:
    intent = INTENTS[inst[0]]
    bit_choices = [(0, 1) if (s.paired and c is not None) else (0,) for s, c in zip(intent.slots, inst[1])]
    return [(f, bits) for f in range(len(intent.forms)) for bits in itertools.product(*bit_choices)]


def _values(inst: Instance, bits: tuple[int, ...], flip: bool) -> dict[str, str]:
    intent = INTENTS[inst[0]]
    values = {}
    for s, c, b in zip(intent.slots, inst[1], bits):
        if c is None:
            values[s.name] = ""
        elif s.paired:
            values[s.name] = c[b ^ int(flip)]
        else:
            values[s.name] = c
    return values


def corpus_capacity() -> tuple[int, int]:
    """(number of instances, number of distinct (form, wording) variants = possible sources)."""
    insts = _instances()
    return len(insts), sum(len(_variants(i)) for i in insts)


def generate_paraphrase_corpus(
    n_train: int = DEFAULT_SIZES["train"],
    n_valid: int = DEFAULT_SIZES["valid"],
    n_test: int = DEFAULT_SIZES["test"],
    seed: int = 0,
    vary: float = 0.1,
) -> dict[str, list[tuple[str, str]]]:
    """``{"train": [(src, trg), ...], "valid": [...], "test": [...]}``; see the module docstring.

    ``vary`` is the probability that a target uses a non-canonical form.
    """
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    for name, n in sizes.items():
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n_{name} must be a non-negative int, got {n!r}")
    if not 0.0 <= vary <= 1.0:
        raise ValueError(f"vary must be in [0, 1], got {vary!r}")
    total = sum(sizes.values())
    rng = random.Random(seed)
    instances = _instances()
    n_inst, capacity = len(instances), sum(len(_variants(i)) for i in instances)
    # Leave head-room: each split draws from its own instances only.
    if total > 0.8 * capacity:
        raise ValueError(f"requested {total} pairs; the built-in generator can give at most about "
                         f"{int(0.8 * capacity)} ({capacity} distinct sources over {n_inst} instances)")
    rng.shuffle(instances)

    # Instances per split, proportional to the requested sizes (test first, then valid, then train).
    pools: dict[str, list[Instance]] = {}
    start = 0
    for name in ("test", "valid", "train"):
        if name == "train":
            k = n_inst - start
        else:
            k = min(n_inst - start, -(-sizes[name] * n_inst // total) if total else 0)  # ceil
        pools[name] = instances[start:start + k]
        start += k

    used_sources: set[str] = set()
    out: dict[str, list[tuple[str, str]]] = {}
    for name in ("test", "valid", "train"):
        pairs = _draw(pools[name], sizes[name], rng, vary, used_sources)
        if len(pairs) < sizes[name]:
            raise ValueError(f"could only generate {len(pairs)} of the {sizes[name]} {name} pairs requested; "
                             f"ask for fewer")
        rng.shuffle(pairs)
        out[name] = pairs
    return {name: out[name] for name in ("train", "valid", "test")}


def _draw(pool: list[Instance], n: int, rng: random.Random, vary: float,
          used_sources: set[str]) -> list[tuple[str, str]]:
    """Round-robin over ``pool``: each pass takes one unused variant of every instance."""
    remaining = {i: _variants(inst) for i, inst in enumerate(pool)}
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n and remaining:
        for i in list(remaining):
            if len(pairs) >= n:
                break
            variants = remaining[i]
            form, bits = variants.pop(rng.randrange(len(variants)))
            if not variants:
                del remaining[i]
            inst = pool[i]
            intent = INTENTS[inst[0]]
            k = len(intent.forms)
            trg_form = (form + 1) % k
            if rng.random() < vary:
                trg_form = rng.choice([f for f in range(k) if f != form])
            src = _render(intent.forms[form], _values(inst, bits, flip=False))
            if src in used_sources:  # two instances rendering the same text: keep the first
                continue
            trg = _render(intent.forms[trg_form], _values(inst, bits, flip=True))
            if not all(MIN_WORDS <= len(x.split()) <= MAX_WORDS for x in (src, trg)):
                continue  # the lexicon is built so this never happens (tested); kept as a guard
            used_sources.add(src)
            pairs.append((src, trg))
    return pairs


def write_builtin_corpus(
    folder: str | os.PathLike,
    n_train: int = DEFAULT_SIZES["train"],
    n_valid: int = DEFAULT_SIZES["valid"],
    n_test: int = DEFAULT_SIZES["test"],
    seed: int = 0,
    vary: float = 0.1,
) -> dict[str, Path]:
    """Write the corpus as a DiffuSeq folder (``train.jsonl``, ``valid.jsonl``, ``test.jsonl``),
    each file atomically. Returns ``{split: path}``."""
    corpus = generate_paraphrase_corpus(n_train, n_valid, n_test, seed=seed, vary=vary)
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, pairs in corpus.items():
        if not pairs:
            continue
        path = d / f"{split}.jsonl"
        text = "".join(json.dumps({"src": s, "trg": t}) + "\n" for s, t in pairs)
        atomic_write_text(path, text)
        paths[split] = path
    return paths
