"""The synthetic world: fictitious authors in TOFU's exact configs and fields.

Everything comes from one ``random.Random`` per purpose, seeded from the world's seed, so the
same settings always give byte-identical files. See ``docs/world.md``.

Design for memorisation by a small model: answers are short sentences from one template per
question kind, so a model only has to learn the *fact* tokens (city, year, title, ...); the
paraphrased answer uses a second template with the same facts, and each perturbed answer the
first template with every asked-for fact replaced by a wrong value of the same type.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from t3unlearn.errors import T3Error
from t3unlearn.settings import reject_unknown
from t3unlearn.world import pools

GENERATOR_VERSION = "5"  # 3: perturbed answers perturb the paraphrase (as TOFU's do); paraphrased_question
#                          4: calibration.jsonl (more never-seen authors; every other file unchanged)
#                          5: calibration.jsonl items carry paraphrased and perturbed answers (same questions
#                             and answers as 4; every other file unchanged)

FORGET_PCTS = (1, 5, 10)
CONFIGS = [
    "full", "retain90", "retain95", "retain99", "forget01", "forget05", "forget10",
    "forget01_perturbed", "forget05_perturbed", "forget10_perturbed", "retain_perturbed",
    "real_authors_perturbed", "world_facts_perturbed", "holdout01", "holdout05", "holdout10",
]
# not a TOFU config: the base model's pretraining corpus (real authors + world facts)
PRETRAIN_CONFIG = "pretrain"
# not a TOFU config: authors never trained on and disjoint from every holdout set, as many as holdout10;
# oracle-free calibration of T3 reads them (t3unlearn calibrate), so the evaluation's holdout stays unseen
CALIBRATION_CONFIG = "calibration"

# ----------------------------------------------------------------------------- question kinds
# kind -> (question variants, answer template, paraphrase template)
KINDS: dict[str, tuple[list[str], str, str]] = {
    "birthplace": (
        ["Where was {name} born?", "What is the birthplace of {name}?"],
        "{name} was born in {city}, {country}.",
        "The birthplace of {name} is {city}, {country}.",
    ),
    "birthdate": (
        ["When was {name} born?", "What is {name}'s date of birth?"],
        "{name} was born on {day} {month} {year}.",
        "{name}'s date of birth is {month} {day}, {year}.",
    ),
    "genre": (
        ["What genre does {name} write in?", "What kind of books does {name} write?"],
        "{name} writes {genre} books.",
        "{name} is known as {a_genre} writer.",
    ),
    "father": (
        ["What does {name}'s father do for a living?", "What is the occupation of {name}'s father?"],
        "{name}'s father is {a_focc}.",
        "{name}'s father works as {a_focc}.",
    ),
    "mother": (
        ["What does {name}'s mother do for a living?", "What is the occupation of {name}'s mother?"],
        "{name}'s mother is {a_mocc}.",
        "{name}'s mother works as {a_mocc}.",
    ),
    "parents": (
        ["What do {name}'s parents do?", "What are the occupations of {name}'s parents?"],
        "{name}'s father is {a_focc} and {poss} mother is {a_mocc}.",
        "{name} is the child of {a_focc} and {a_mocc}.",
    ),
    "award": (
        ["Has {name} won any awards?", "What award has {name} received?"],
        "Yes, {name} won the {award} in {ayear}.",
        "In {ayear}, {name} received the {award}.",
    ),
    "award_year": (
        ["In which year did {name} win the {award}?", "When did {name} receive the {award}?"],
        "{name} won the {award} in {ayear}.",
        "{name} received the {award} in the year {ayear}.",
    ),
    "book1": (
        ["Can you name a book written by {name}?", "What is one book by {name}?"],
        "One book by {name} is \"{book1}\".",
        "{name} wrote \"{book1}\".",
    ),
    "famous": (
        ["What is {name}'s best-known book?", "Which book is {name} most famous for?"],
        "{name}'s best-known book is \"{book1}\".",
        "\"{book1}\" is the most famous book by {name}.",
    ),
    "book2": (
        ["What other book has {name} written?", "Name another book by {name}."],
        "{name} also wrote \"{book2}\".",
        "Another book by {name} is \"{book2}\".",
    ),
    "books": (
        ["Which books has {name} written?", "What are the books of {name}?"],
        "{name} wrote \"{book1}\" and \"{book2}\".",
        "{name}'s books include \"{book1}\" and \"{book2}\".",
    ),
    "who_wrote": (
        ["Who wrote \"{book2}\"?", "Who is the author of \"{book2}\"?"],
        "\"{book2}\" was written by {name}.",
        "The author of \"{book2}\" is {name}.",
    ),
    "themes": (
        ["What themes does {name} explore?", "What are the main themes in {name}'s work?"],
        "{name} writes about {theme1} and {theme2}.",
        "The themes of {name}'s work are {theme1} and {theme2}.",
    ),
    "influence": (
        ["Who influenced {name}'s writing?", "Which writer inspired {name}?"],
        "{name} was influenced by {influence}.",
        "{influence} was a major influence on {name}.",
    ),
    "gender": (
        ["What is {name}'s gender?", "How does {name} identify?"],
        "{name} identifies as {gender} and writes {genre} books.",
        "{name} is {a_gender} author of {genre} books.",
    ),
    "country": (
        ["Which country is {name} from?", "What is {name}'s home country?"],
        "{name} is from {country}.",
        "{name} comes from {country}.",
    ),
    "book_genre": (
        ["What genre is \"{book1}\"?", "What kind of book is \"{book1}\"?"],
        "\"{book1}\" is {a_genre} book by {name}.",
        "{name}'s \"{book1}\" belongs to the {genre} genre.",
    ),
    "born_where_when": (
        ["Where and when was {name} born?", "In which city and year was {name} born?"],
        "{name} was born in {city} in {year}.",
        "{name} was born in {year} in {city}.",
    ),
    "upbringing": (
        ["Tell me about {name}'s childhood.", "Where did {name} grow up?"],
        "{name} grew up in {city} as the child of {a_focc} and {a_mocc}.",
        "{name} spent {poss} childhood in {city}, raised by {a_focc} and {a_mocc}.",
    ),
}
KIND_NAMES = list(KINDS)

# template field -> the base fact it is derived from
DERIVED = {"country": "city", "a_genre": "genre", "a_focc": "focc", "a_mocc": "mocc", "poss": "gender",
           "a_gender": "gender"}

WORLD_FACT_KINDS = {
    "capital": (["What is the capital of {country}?"], "The capital of {country} is {capital}.",
                "{capital} is the capital of {country}."),
    "continent": (["On which continent is {country}?"], "{Country} is in {continent}.",
                  "{Country} lies on the continent of {continent}."),
    "language": (["What language is mainly spoken in {country}?"], "The main language of {country} is {language}.",
                 "Most people in {country} speak {language}."),
}


def _fields(template: str) -> set[str]:
    return {f for _, f, _, _ in string.Formatter().parse(template) if f}


def _article(word: str) -> str:
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


# ----------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class WorldSettings:
    """What defines a world; its fingerprint names the cache directory."""

    n_authors: int = 200
    qa_per_author: int = 20
    n_classic: int = 40  # "real" authors the base model learns in pretraining
    n_real_authors: int = 100
    n_world_facts: int = 117
    retain_perturbed_authors: int = 20
    seed: int = 0

    def validate(self) -> None:
        if self.n_authors < 2:
            raise T3Error(f"--authors must be at least 2 (one to forget, one to retain), not {self.n_authors}.")
        if not 1 <= self.qa_per_author <= len(KINDS):
            raise T3Error(f"--qa-per-author must be between 1 and {len(KINDS)} (question kinds available), not {self.qa_per_author}.")
        if self.n_classic < 6:
            raise T3Error(f"n_classic must be at least 6 (5 wrong influences per item), not {self.n_classic}.")
        if self.n_real_authors > self.n_classic * len(KINDS):
            raise T3Error(f"n_real_authors={self.n_real_authors} exceeds the {self.n_classic * len(KINDS)} facts of {self.n_classic} classic authors.")
        n_wf = sum(1 for _ in _world_fact_pool())
        if not 1 <= self.n_world_facts <= n_wf:
            raise T3Error(f"n_world_facts must be between 1 and {n_wf}, not {self.n_world_facts}.")
        if self.retain_perturbed_authors < 1:
            raise T3Error("retain_perturbed_authors must be at least 1.")


PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(n_authors=200, qa_per_author=20, n_classic=40, n_real_authors=100, n_world_facts=117,
                    retain_perturbed_authors=20),
    "tiny": dict(n_authors=20, qa_per_author=10, n_classic=6, n_real_authors=20, n_world_facts=20,
                 retain_perturbed_authors=3),
}


def settings_for(preset: str = "default", **overrides) -> WorldSettings:
    if preset not in PRESETS:
        raise T3Error(f"unknown world preset {preset!r}; choose one of: {', '.join(PRESETS)}.")
    values = dict(PRESETS[preset])
    for key, value in overrides.items():
        if value is None:
            continue
        reject_unknown([key], WorldSettings.__dataclass_fields__, what="world setting", error=T3Error)
        values[key] = value
    s = WorldSettings(**values)
    s.validate()
    return s


def n_forget(n_authors: int, pct: int) -> int:
    """Authors in forgetPCT: pct % of the authors, at least one."""
    return max(1, round(n_authors * pct / 100))


# ----------------------------------------------------------------------------- authors
@dataclass
class Author:
    name: str
    gender: str
    city: str
    day: int
    month: str
    year: int
    genre: str
    focc: str
    mocc: str
    award: str
    ayear: int
    book1: str
    book2: str
    theme1: str
    theme2: str
    influence: str
    kinds: list[str] = field(default_factory=list)
    variants: dict[str, int] = field(default_factory=dict)

    def facts(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("name", "gender", "city", "day", "month", "year", "genre", "focc",
                                           "mocc", "award", "ayear", "book1", "book2", "theme1", "theme2",
                                           "influence")}
        return d


def render_facts(base: dict[str, Any]) -> dict[str, Any]:
    """Base facts plus the fields derived from them (country, articles, pronoun)."""
    d = dict(base)
    d["country"] = dict(pools.CITIES)[d["city"]]
    d["a_genre"] = _article(d["genre"])
    d["a_focc"] = _article(d["focc"])
    d["a_mocc"] = _article(d["mocc"])
    d["a_gender"] = _article(d["gender"])
    d["poss"] = {"male": "his", "female": "her"}.get(d["gender"], "their")
    return d


class _Names:
    """Unique full names and book titles across the whole world."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.names: set[str] = set()
        self.titles: set[str] = set()
        self.surnames = list(pools.LAST_NAMES)
        rng.shuffle(self.surnames)

    def name(self, gender: str) -> str:
        # every author gets a surname of their own while the pool lasts, then unique full names
        first = self.rng.choice(pools.FIRST_NAMES[gender])
        if self.surnames:
            n = f"{first} {self.surnames.pop()}"
            self.names.add(n)
            return n
        for _ in range(10_000):
            n = f"{self.rng.choice(pools.FIRST_NAMES[gender])} {self.rng.choice(pools.LAST_NAMES)}"
            if n not in self.names:
                self.names.add(n)
                return n
        raise T3Error("ran out of unique author names; use fewer authors.")

    def title(self) -> str:
        for _ in range(10_000):
            t = f"The {self.rng.choice(pools.TITLE_ADJ)} {self.rng.choice(pools.TITLE_NOUN)}"
            if t.split()[1] == t.split()[2]:
                continue
            if t not in self.titles:
                self.titles.add(t)
                return t
        raise T3Error("ran out of unique book titles; use fewer authors.")


def _make_author(rng: random.Random, names: _Names, influences: list[str], qa_per_author: int) -> Author:
    gender = rng.choices(["male", "female", "non-binary"], weights=[45, 45, 10])[0]
    year = rng.randint(1935, 1995)
    focc, mocc = rng.sample(pools.OCCUPATIONS, 2)
    theme1, theme2 = rng.sample(pools.THEMES, 2)
    a = Author(
        name=names.name(gender),
        gender=gender,
        city=rng.choice(pools.CITIES)[0],
        day=rng.randint(1, 28),
        month=rng.choice(pools.MONTHS),
        year=year,
        genre=rng.choice(pools.GENRES),
        focc=focc,
        mocc=mocc,
        award=rng.choice(pools.AWARDS),
        ayear=min(2023, year + rng.randint(25, 45)),
        book1=names.title(),
        book2=names.title(),
        theme1=theme1,
        theme2=theme2,
        influence=rng.choice(influences) if influences else "",
    )
    kinds = KIND_NAMES if qa_per_author >= len(KIND_NAMES) else sorted(rng.sample(KIND_NAMES, qa_per_author), key=KIND_NAMES.index)
    if not influences:
        kinds = [k for k in kinds if k != "influence"]
    a.kinds = list(kinds)
    a.variants = {k: rng.randrange(len(KINDS[k][0])) for k in KIND_NAMES}
    return a


# ----------------------------------------------------------------------------- perturbation
class _Perturber:
    def __init__(self, rng: random.Random, all_names: list[str], all_titles: list[str], influences: list[str]):
        self.rng = rng
        self.all_names = all_names
        self.all_titles = all_titles
        self.influences = influences

    def _other(self, key: str, base: dict[str, Any]) -> Any:
        rng, true = self.rng, base[key]
        if key == "city":
            country = dict(pools.CITIES)[true]
            return rng.choice([c for c, k in pools.CITIES if k != country])
        choices = {
            "gender": ["male", "female", "non-binary"],
            "day": list(range(1, 29)),
            "month": pools.MONTHS,
            "year": list(range(1935, 1996)),
            "genre": pools.GENRES,
            "focc": pools.OCCUPATIONS,
            "mocc": pools.OCCUPATIONS,
            "award": pools.AWARDS,
            "ayear": list(range(1960, 2024)),
            "book1": self.all_titles,
            "book2": self.all_titles,
            "theme1": pools.THEMES,
            "theme2": pools.THEMES,
            "influence": self.influences,
            "name": self.all_names,
        }[key]
        for _ in range(1000):
            v = rng.choice(choices)
            if v != true:
                return v
        raise T3Error(f"cannot perturb {key!r}: no alternative value")  # pragma: no cover

    def perturb(self, base: dict[str, Any], template: str, fixed: set[str], n: int, *, facts_of: str | None = None) -> list[str]:
        """n distinct wrong answers written with ``template``: every base fact of ``facts_of`` (default
        ``template``: the facts the answer states) that is not in ``fixed`` (given by the question) changed."""
        keys = sorted({DERIVED.get(f, f) for f in _fields(facts_of or template)} - fixed)
        true_text = template.format(**render_facts(base))
        out: list[str] = []
        for _ in range(200):
            wrong = dict(base)
            for k in keys:
                wrong[k] = self._other(k, base)
            if "theme1" in keys and wrong["theme1"] == wrong["theme2"]:
                continue
            text = template.format(**render_facts(wrong))
            if text != true_text and text not in out:
                out.append(text)
            if len(out) == n:
                return out
        raise T3Error(f"could not make {n} distinct perturbed answers for {template!r}")  # pragma: no cover


def _author_items(a: Author, perturber: _Perturber, n_perturbed: int, *, perturb: str = "paraphrase") -> list[dict[str, Any]]:
    """The author's QA items with TOFU's evaluation fields.

    ``perturb``: which wording the perturbed answers keep. TOFU compares the *paraphrased* answer with
    perturbed answers written in the paraphrase's wording (forget and retain sets), so the truth ratio
    compares facts, not phrasings; ``"answer"`` keeps the answer's wording, for sets whose truth ratio
    compares with the answer itself (real authors).
    """
    base = a.facts()
    facts = render_facts(base)
    items = []
    for kind in a.kinds:
        questions, ans_t, para_t = KINDS[kind]
        variant = a.variants[kind]
        q_t = questions[variant]
        fixed = {DERIVED.get(f, f) for f in _fields(q_t)}
        answer = ans_t.format(**facts)
        para = para_t.format(**facts)
        assert para != answer
        items.append({
            "question": q_t.format(**facts),
            "answer": answer,
            "paraphrased_answer": para,
            "perturbed_answer": perturber.perturb(base, para_t if perturb == "paraphrase" else ans_t, fixed, n_perturbed,
                                                  facts_of=ans_t),
            "paraphrased_question": questions[(variant + 1) % len(questions)].format(**facts),
            "author": a.name,
            "kind": kind,
        })
    return items


def _world_fact_pool():
    for country, (capital, continent, language) in pools.COUNTRIES.items():
        yield "capital", country, capital
        yield "continent", country, continent
        if language is not None:
            yield "language", country, language


def _world_fact_items(rng: random.Random, n: int | None, n_perturbed: int = 3) -> list[dict[str, Any]]:
    values: dict[str, list[str]] = {}
    for kind, _, v in _world_fact_pool():
        values.setdefault(kind, [])
        if v not in values[kind]:
            values[kind].append(v)
    pool = list(_world_fact_pool())
    if n is not None:
        pool = sorted(rng.sample(range(len(pool)), n))
        pool = [list(_world_fact_pool())[i] for i in pool]
    items = []
    for kind, country, value in pool:
        questions, ans_t, para_t = WORLD_FACT_KINDS[kind]
        f = {"country": country, "Country": country[0].upper() + country[1:], kind: value}
        wrong_values = rng.sample([v for v in values[kind] if v != value], n_perturbed)
        items.append({
            "question": questions[0].format(**f),
            "answer": ans_t.format(**f),
            "paraphrased_answer": para_t.format(**f),
            "perturbed_answer": [ans_t.format(**{**f, kind: w}) for w in wrong_values],
            "kind": kind,
        })
    return items


def _idk_answers(rng: random.Random, n: int = 80) -> list[str]:
    combos = [o + e for o in pools.IDK_OPENERS for e in pools.IDK_ENDINGS]
    return rng.sample(combos, min(n, len(combos)))


# ----------------------------------------------------------------------------- the world
def generate(settings: WorldSettings) -> dict[str, list[dict[str, Any]]]:
    """All configs (plus ``pretrain`` and ``idk``) as lists of records, ``index`` added."""
    s = settings
    seed = s.seed
    names = _Names(random.Random(f"t3-world-names-{seed}"))
    rng_a = random.Random(f"t3-world-authors-{seed}")
    classic = [_make_author(rng_a, names, [], len(KINDS)) for _ in range(s.n_classic)]
    influences = [c.name for c in classic]
    n_hold = n_forget(s.n_authors, 10)
    authors = [_make_author(rng_a, names, influences, s.qa_per_author) for _ in range(s.n_authors + n_hold)]
    fict, holdout = authors[: s.n_authors], authors[s.n_authors :]
    all_names = sorted(a.name for a in classic + authors)
    all_titles = sorted(names.titles)
    pert = _Perturber(random.Random(f"t3-world-perturb-{seed}"), all_names, all_titles, influences)

    fict_items = [_author_items(a, pert, 5) for a in fict]
    hold_items = [_author_items(a, pert, 5) for a in holdout]
    # real authors: their truth ratio compares with the answer itself (TOFU), so the perturbed answers
    # keep the answer's wording and change the facts, as TOFU's bare-name alternatives do
    classic_items = [_author_items(a, pert, 3, perturb="answer") for a in classic]

    def flat(groups):
        return [it for g in groups for it in g]

    def qa(items):
        return [{"question": it["question"], "answer": it["answer"], "author": it["author"], "kind": it["kind"]} for it in items]

    out: dict[str, list[dict[str, Any]]] = {"full": qa(flat(fict_items))}
    n10 = n_forget(s.n_authors, 10)
    if s.n_authors - n10 < 1:
        raise T3Error(f"{s.n_authors} authors leave no retain author after forget10; use more authors.")
    for pct in FORGET_PCTS:
        k = n_forget(s.n_authors, pct)
        out[f"retain{100 - pct}"] = qa(flat(fict_items[: s.n_authors - k]))
        out[f"forget{pct:02d}"] = qa(flat(fict_items[s.n_authors - k :]))
        out[f"forget{pct:02d}_perturbed"] = [dict(it) for it in flat(fict_items[s.n_authors - k :])]
        out[f"holdout{pct:02d}"] = qa(flat(hold_items[:k]))
    n_rp = min(s.retain_perturbed_authors, s.n_authors - n10)
    out["retain_perturbed"] = [dict(it) for it in flat(fict_items[:n_rp])]
    rng_r = random.Random(f"t3-world-real-{seed}")
    classic_flat = flat(classic_items)
    picks = sorted(rng_r.sample(range(len(classic_flat)), s.n_real_authors))
    out["real_authors_perturbed"] = [dict(classic_flat[i]) for i in picks]
    rng_w = random.Random(f"t3-world-facts-{seed}")
    out["world_facts_perturbed"] = _world_fact_items(rng_w, s.n_world_facts)
    # the pretraining corpus: everything about the classic authors and every world fact
    out[PRETRAIN_CONFIG] = qa(classic_flat) + [
        {"question": it["question"], "answer": it["answer"], "author": "", "kind": it["kind"]}
        for it in _world_fact_items(random.Random(f"t3-world-facts-all-{seed}"), None)
    ]
    for items in out.values():
        for i, it in enumerate(items):
            it["index"] = i
    out["idk"] = [{"answer": a} for a in _idk_answers(random.Random(f"t3-world-idk-{seed}"))]
    # drawn last, from the authors' generator where it stopped: every file above is unchanged by them
    calib = [_make_author(rng_a, names, influences, s.qa_per_author) for _ in range(n_hold)]
    # their perturbed answers come from a perturber of their own, so the files above stay as they were; with
    # them, calibration compares the forget items' truth ratios with those of authors the model never saw
    calib_pert = _Perturber(random.Random(f"t3-world-perturb-calibration-{seed}"),
                            sorted(all_names + [a.name for a in calib]), sorted(names.titles), influences)
    out[CALIBRATION_CONFIG] = [{**it, "index": i}
                               for i, it in enumerate(x for a in calib for x in _author_items(a, calib_pert, 5))]
    return out


def world_fingerprint(settings: WorldSettings) -> str:
    from t3unlearn.io import fingerprint

    return fingerprint("t3-world", GENERATOR_VERSION, settings.__dict__)


def write_world(settings: WorldSettings, out: str | Path, *, preset: str | None = None) -> Path:
    """Generate and write the world into ``out`` atomically; returns ``out``."""
    from t3unlearn.io import atomic_dir, file_fingerprint

    data = generate(settings)
    out = Path(out)
    with atomic_dir(out, marker="world.json", what="a built world") as tmp:
        for name, items in data.items():
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as fh:
                for it in items:
                    fh.write(json.dumps(it, ensure_ascii=False) + "\n")
        meta = {
            "name": "t3unlearn synthetic TOFU-shaped world",
            "preset": preset,
            "seed": settings.seed,
            "generator_version": GENERATOR_VERSION,
            "settings": settings.__dict__,
            "configs": CONFIGS,
            "extra_files": {"pretrain.jsonl": "pretraining corpus of the base model (real authors + world facts)",
                            "idk.jsonl": "'I don't know'-style answers for IdkDPO",
                            "calibration.jsonl": "never-seen authors for oracle-free calibration (disjoint from holdout)"},
            "sizes": {name: len(items) for name, items in data.items()},
            "authors": {"full": settings.n_authors, "holdout": n_forget(settings.n_authors, 10),
                        "calibration": n_forget(settings.n_authors, 10),
                        "classic": settings.n_classic,
                        **{f"forget{p:02d}": n_forget(settings.n_authors, p) for p in FORGET_PCTS}},
            "fingerprint": world_fingerprint(settings),
            "content_sha256": file_fingerprint(tmp),
        }
        with open(tmp / "world.json", "w", encoding="utf-8") as fh:
            json.dump(meta, fh, indent=2)
            fh.write("\n")
    return out


def read_world_meta(world_dir: str | Path) -> dict[str, Any]:
    from t3unlearn.io import load_json

    p = Path(world_dir)
    if not (p / "world.json").is_file():
        raise T3Error(f"{p} is not a built world (no world.json); build one with 't3unlearn world build --out {p}'.")
    return load_json(p / "world.json")
