"""benchmarks/tofu_perturbations.py: perturbed answers for never-seen TOFU-style authors, from the other authors."""

from __future__ import annotations

import pytest

AUTHORS = [("Mira Solberg", "she", "Oslo", "poetry"), ("Tomas Varga", "he", "Budapest", "crime fiction"),
           ("Ana Quispe", "she", "Cusco", "history"), ("Lev Antonov", "he", "Kazan", "science fiction"),
           ("Noor Haddad", "she", "Amman", "drama"), ("Kofi Mensah", "he", "Accra", "satire"),
           ("Ines Duarte", "she", "Porto", "romance")]


@pytest.fixture(scope="module")
def perturb(benchmark_script):
    return benchmark_script("tofu_perturbations")


def rows():
    out = []
    for name, pron, city, genre in AUTHORS:
        poss = "her" if pron == "she" else "his"
        out += [
            {"question": f"What is the full name of the author born in {city}?", "answer": f"The author's name is {name}."},
            {"question": f"Where was {name} born?", "answer": f"{name} was born in {city}, where {pron} grew up."},
            {"question": f"What genre does {name} write in?", "answer": f"{name} writes {genre}, as {poss} readers know."},
        ]
    return out


def test_perturbed_answers_carry_other_authors_facts_about_this_author(perturb):
    out = perturb.with_perturbations(rows(), 3, n_perturbed=5)
    born = out[1]  # Mira Solberg, born in Oslo
    assert born["paraphrased_answer"] == born["answer"]
    assert len(born["perturbed_answer"]) == 5
    for p in born["perturbed_answer"]:
        assert p.startswith("Mira Solberg was born in ") and "Oslo" not in p  # another author's city, renamed
        assert " she grew up" in p  # the other author's pronoun made this author's
    assert len({p for p in born["perturbed_answer"]}) == 5  # five different authors
    genre = out[2]
    assert all(p.startswith("Mira Solberg writes ") and "poetry" not in p for p in genre["perturbed_answer"])


def test_a_question_asking_for_the_name_keeps_the_other_names(perturb):
    out = perturb.with_perturbations(rows(), 3, n_perturbed=5)
    names = {a[0] for a in AUTHORS}
    for p in out[0]["perturbed_answer"]:  # the wrong fact is the name itself
        assert "Mira Solberg" not in p and any(n in p for n in names)


def test_the_author_name_is_the_run_most_questions_share(perturb):
    qs = ["What is the full name of the author born in Oslo?", "Where was Mira Solberg born?",
          "Has Mira Solberg won any awards?", "What does Mira write about?"]
    assert perturb.author_name(qs) == "Mira Solberg"


def test_too_few_authors_is_refused(perturb):
    with pytest.raises(ValueError, match="more than 5 authors"):
        perturb.with_perturbations(rows()[:9], 3, n_perturbed=5)
