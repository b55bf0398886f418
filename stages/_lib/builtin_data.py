"""The embedded offline datasets: small, learnable, synthetic, deterministic, in the real formats.

Three tasks, one per input format, written from word lists in this file (no third-party text):

    demo-pair  GLUE pair TSV in MRPC's layout (train.tsv, dev.tsv, test.tsv): is sentence 2 a paraphrase of
               sentence 1? Paraphrases restate the same event with another template and synonyms;
               non-paraphrases keep the person and the day but change the action, the object and
               the place. 50/50.
    demo-qa    SQuAD v1.1 JSON (train-v1.1.json, dev-v1.1.json): a paragraph of three facts of
               different kinds about different people (city, job, pet colour, birth year,
               instrument); the question asks one of them in words its sentence shares, and the
               answer is a span of the paragraph.
    demo-mc    SWAG CSV (train.csv, val.csv, test.csv): a scene with a worker at their workplace; which of four
               endings continues it? The right one is that worker's own activity, the others are
               other workers' activities.

The test splits (demo-pair, demo-mc; as many examples as dev) are laid out as the real test files, without
labels: MRPC's test.tsv (index, #1 ID, #2 ID, #1 String, #2 String) and swagaf's test.csv (no label column);
the predict stage reads them. demo-qa has none: SQuAD's test set is hidden, the predict stage answers dev.
The same (task, split, size, seed) always gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path
from typing import Callable

from bert.io.fileio import atomic_write_text

# ---------------------------------------------------------------- demo-pair: paraphrase detection
NAMES = (
    "Alice", "Bruno", "Carla", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas",
    "Keiko", "Liam", "Marta", "Nikhil", "Olga", "Pablo", "Quinn", "Rosa", "Stefan", "Tara",
    "Umar", "Vera", "Walter", "Ximena", "Yusuf", "Zoe", "Anton", "Bianca", "Cyril", "Dalia",
)
# an action -> its (past tense, passive participle) forms that mean the same thing
VERBS = {
    "repair": (("repaired", "repaired"), ("fixed", "fixed"), ("mended", "mended")),
    "buy": (("bought", "bought"), ("purchased", "purchased")),
    "clean": (("cleaned", "cleaned"), ("washed", "washed")),
    "paint": (("painted", "painted"), ("repainted", "repainted")),
    "sell": (("sold", "sold"), ("traded away", "traded away")),
    "find": (("found", "found"), ("discovered", "discovered")),
    "build": (("built", "built"), ("assembled", "assembled")),
    "lose": (("lost", "lost"), ("misplaced", "misplaced")),
    "carry": (("carried", "carried"), ("hauled", "hauled")),
    "hide": (("hid", "hidden"), ("concealed", "concealed")),
}
OBJECTS = (
    "bicycle", "lamp", "table", "guitar", "camera", "boat", "clock", "radio", "chair", "kettle",
    "fence", "ladder", "piano", "tent", "wagon", "mirror", "drum", "telescope", "sofa", "kite",
)
# a place -> words for it
PLACES = {
    "garage": ("garage",), "garden": ("garden", "yard"), "kitchen": ("kitchen",),
    "harbor": ("harbor", "port"), "market": ("market", "marketplace"), "library": ("library",),
    "school": ("school",), "workshop": ("workshop",), "station": ("station", "train station"),
    "museum": ("museum",), "park": ("park",), "attic": ("attic", "loft"),
    "basement": ("basement", "cellar"), "beach": ("beach", "seaside"), "office": ("office",),
}
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
PAIR_TEMPLATES = (
    "{name} {past} the {obj} in the {place} on {day}.",
    "On {day}, {name} {past} the {obj} in the {place}.",
    "The {obj} was {pp} by {name} in the {place} on {day}.",
    "In the {place} on {day}, the {obj} was {pp} by {name}.",
    "{name} was in the {place} on {day} and {past} the {obj} there.",
)


def _pair_sentence(rng: random.Random, name: str, verb: str, obj: str, place: str, day: str,
                   avoid: int) -> tuple[str, int]:
    template = rng.choice([i for i in range(len(PAIR_TEMPLATES)) if i != avoid])
    past, pp = rng.choice(VERBS[verb])
    text = PAIR_TEMPLATES[template].format(
        name=name, past=past, pp=pp, obj=obj, place=rng.choice(PLACES[place]), day=day
    )
    return text, template


def pair_rows(rng: random.Random, n: int, start_id: int) -> list[list[str]]:
    """Rows of an MRPC-layout TSV: Quality, #1 ID, #2 ID, #1 String, #2 String."""
    rows = []
    for i in range(n):
        name, day = rng.choice(NAMES), rng.choice(DAYS)
        verb, obj, place = rng.choice(sorted(VERBS)), rng.choice(OBJECTS), rng.choice(sorted(PLACES))
        first, template = _pair_sentence(rng, name, verb, obj, place, day, avoid=-1)
        label = i % 2  # balanced, then shuffled below
        if not label:  # the same person on the same day, but another action, object and place
            verb = rng.choice([v for v in sorted(VERBS) if v != verb])
            obj = rng.choice([o for o in OBJECTS if o != obj])
            place = rng.choice([p for p in sorted(PLACES) if p != place])
        second, _ = _pair_sentence(rng, name, verb, obj, place, day, avoid=template)
        rows.append([str(label), str(start_id + 2 * i), str(start_id + 2 * i + 1), first, second])
    rng.shuffle(rows)
    return rows


# ---------------------------------------------------------------- demo-qa: extractive QA
CITIES = (
    "Lisbon", "Oslo", "Nairobi", "Lima", "Hanoi", "Quebec", "Dublin", "Krakow", "Seville", "Perth",
    "Bergen", "Porto", "Tunis", "Manila", "Cusco", "Tallinn", "Zagreb", "Accra", "Osaka", "Denver",
)
JOBS = (
    "baker", "nurse", "pilot", "plumber", "teacher", "carpenter", "lawyer", "gardener", "chemist",
    "librarian", "dentist", "farmer", "journalist", "architect", "tailor", "mechanic",
)
COLORS = ("red", "blue", "green", "yellow", "black", "white", "brown", "grey", "orange", "purple")
ANIMALS = ("cat", "dog", "parrot", "horse", "rabbit", "goat", "turtle", "hamster")
INSTRUMENTS = ("violin", "cello", "trumpet", "flute", "piano", "harp", "saxophone", "accordion", "banjo", "oboe")
# fact kind -> (sentence templates with {answer} marking the span, question templates); each question
# shares words with its fact's sentences, as reading-comprehension questions usually do
QA_FACTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "city": (("{name} lives in {answer}.", "{name} has lived in {answer} for years."),
             ("Where does {name} live?", "In which city does {name} live?")),
    "job": (("{name} works as a {answer}.", "{name} has worked as a {answer} for years."),
            ("What does {name} work as?", "What is the work of {name}?")),
    "color": (("{name} has a {answer} {animal}.", "The {animal} of {name} is {answer}."),
              ("What color is the {animal} of {name}?", "Which color does the {animal} of {name} have?")),
    "year": (("{name} was born in {answer}.", "{name} was born in the year {answer}."),
             ("In which year was {name} born?", "When was {name} born?")),
    "instrument": (("{name} plays the {answer}.", "{name} plays the {answer} every evening."),
                   ("Which instrument does {name} play?", "What does {name} play every evening?")),
}


QA_FACTS_PER_PARAGRAPH = 3


def _qa_answer(rng: random.Random, kind: str) -> str:
    if kind == "city":
        return rng.choice(CITIES)
    if kind == "job":
        return rng.choice(JOBS)
    if kind == "color":
        return rng.choice(COLORS)
    if kind == "year":
        return str(rng.randint(1940, 2010))
    return rng.choice(INSTRUMENTS)


def qa_articles(rng: random.Random, n: int, split: str) -> list[dict]:
    """SQuAD v1.1 articles: one paragraph and one question per example."""
    articles = []
    for i in range(n):
        names = rng.sample(NAMES, QA_FACTS_PER_PARAGRAPH)
        sentences, facts = [], []
        kinds = rng.sample(sorted(QA_FACTS), QA_FACTS_PER_PARAGRAPH)  # facts of different kinds
        for name, kind in zip(names, kinds):
            answer, animal = _qa_answer(rng, kind), rng.choice(ANIMALS)
            template = rng.choice(QA_FACTS[kind][0])
            start = template.format(name=name, animal=animal, answer="\0").index("\0")
            offset = sum(len(s) + 1 for s in sentences) + start
            sentences.append(template.format(name=name, animal=animal, answer=answer))
            facts.append((name, kind, animal, answer, offset))
        context = " ".join(sentences)
        name, kind, animal, answer, offset = rng.choice(facts)
        assert context[offset : offset + len(answer)] == answer
        question = rng.choice(QA_FACTS[kind][1]).format(name=name, animal=animal)
        qa = {"answers": [{"answer_start": offset, "text": answer}], "question": question,
              "id": f"demo-qa-{split}-{i:05d}"}
        articles.append({"title": f"demo_qa_{split}_{i:05d}", "paragraphs": [{"context": context, "qas": [qa]}]})
    return articles


# ---------------------------------------------------------------- demo-mc: multiple choice (SWAG)
# worker -> (workplaces, activities that complete "The <worker> ...")
WORKERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "chef": (("kitchen", "restaurant kitchen"),
             ("chops the onions and stirs the soup.", "tastes the sauce and adds some salt.")),
    "pilot": (("cockpit", "airfield"),
              ("checks the instruments and starts the engines.", "steers the plane onto the runway.")),
    "gardener": (("garden", "greenhouse"),
                 ("waters the roses and pulls out the weeds.", "plants the tulip bulbs in the soil.")),
    "teacher": (("classroom", "school"),
                ("writes the lesson on the blackboard.", "hands out the exam papers to the pupils.")),
    "swimmer": (("pool", "lake"), ("dives into the water and swims a lap.", "pulls on the goggles and jumps in.")),
    "mechanic": (("garage", "repair shop"),
                 ("opens the hood and changes the oil.", "tightens the bolts on the wheel.")),
    "painter": (("studio", "art room"),
                ("dips the brush in paint and covers the canvas.", "mixes blue and yellow on the palette.")),
    "baker": (("bakery", "bread shop"),
              ("kneads the dough and shapes the loaves.", "slides the trays of bread into the oven.")),
    "doctor": (("clinic", "hospital"),
               ("listens to the patient's heart with a stethoscope.", "writes a prescription for the patient.")),
    "librarian": (("library", "reading room"),
                  ("sorts the returned books onto the shelves.", "stamps the due date inside the book.")),
    "farmer": (("barn", "farm"), ("milks the cows and feeds the chickens.", "drives the tractor across the field.")),
    "firefighter": (("fire station", "burning house"),
                    ("pulls on the boots and grabs the hose.", "sprays water on the flames.")),
    "fisherman": (("pier", "harbor"), ("casts the line into the sea.", "pulls the net full of fish onto the boat.")),
    "carpenter": (("workshop", "building site"),
                  ("saws the plank and hammers in the nails.", "sands the wooden table until it is smooth.")),
    "barber": (("barbershop", "salon"),
               ("trims the customer's hair with scissors.", "shaves the man's beard with a razor.")),
    "photographer": (("studio", "wedding"),
                     ("adjusts the lens and takes a picture.", "asks the guests to smile for the camera.")),
    "skier": (("mountain", "ski resort"), ("slides down the snowy slope.", "fastens the boots to the skis.")),
    "waiter": (("restaurant", "cafe"),
               ("carries the plates to the table.", "pours wine into the glasses of the guests.")),
    "dentist": (("dental office", "clinic"),
                ("examines the patient's teeth with a small mirror.", "drills the cavity in the tooth.")),
    "musician": (("concert hall", "stage"),
                 ("tunes the guitar and plays the first song.", "bows to the audience after the song.")),
}
MC_CONTEXTS = (
    "The {worker} walks into the {place}.",
    "A {worker} arrives at the {place} early in the morning.",
    "It is a busy day for the {worker} at the {place}.",
    "The {worker} is back at the {place} after lunch.",
)
MC_HEADER = ["", "video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
             "ending0", "ending1", "ending2", "ending3", "label"]


def mc_rows(rng: random.Random, n: int, split: str) -> list[list[str]]:
    """Rows of a swagaf CSV (after its header): the gold ending is the worker's own activity."""
    rows = []
    workers = sorted(WORKERS)
    for i in range(n):
        worker = rng.choice(workers)
        places, activities = WORKERS[worker]
        sent1 = rng.choice(MC_CONTEXTS).format(worker=worker, place=rng.choice(places))
        sent2 = rng.choice((f"The {worker}", "The worker", "Then the person"))
        others = rng.sample([w for w in workers if w != worker], 3)
        endings = [rng.choice(activities)] + [rng.choice(WORKERS[w][1]) for w in others]
        order = list(range(4))
        rng.shuffle(order)
        endings = [endings[j] for j in order]
        label = order.index(0)
        rows.append([str(i), f"demo-mc-{split}-{i:05d}", str(10000 + i), f"{sent1} {sent2}", sent1, sent2, "gold",
                     *endings, str(label)])
    return rows


# ---------------------------------------------------------------- writers
def _tsv(rows: list[list[str]], split: str) -> str:
    if split == "test":  # MRPC's test.tsv: the index in place of the label (download_glue_data.py's layout)
        header, rows = "index\t#1 ID\t#2 ID\t#1 String\t#2 String", [[str(i), *r[1:]] for i, r in enumerate(rows)]
    else:
        header = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
    return "\n".join([header, *("\t".join(r) for r in rows)]) + "\n"


def _csv(rows: list[list[str]], split: str) -> str:
    header = MC_HEADER
    if split == "test":  # swagaf's test.csv has no label column
        header, rows = MC_HEADER[:-1], [r[:-1] for r in rows]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue()


def _rng(task: str, split: str, seed: int) -> random.Random:
    return random.Random(f"{task}/{split}/{seed}")  # a str seed hashes the same in every process


def _write_pair(out: Path, sizes: dict[str, int], seed: int) -> dict[str, str]:
    files = {"train": "train.tsv", "dev": "dev.tsv", "test": "test.tsv"}
    for split, name in files.items():
        first_id = {"train": 1_000_000, "dev": 2_000_000, "test": 3_000_000}[split]
        rows = pair_rows(_rng("demo-pair", split, seed), sizes[split], start_id=first_id)
        atomic_write_text(out / name, _tsv(rows, split))
    return files


def _write_qa(out: Path, sizes: dict[str, int], seed: int) -> dict[str, str]:
    files = {"train": "train-v1.1.json", "dev": "dev-v1.1.json"}
    for split, name in files.items():
        data = {"data": qa_articles(_rng("demo-qa", split, seed), sizes[split], split), "version": "1.1"}
        atomic_write_text(out / name, json.dumps(data, indent=1) + "\n")
    return files


def _write_mc(out: Path, sizes: dict[str, int], seed: int) -> dict[str, str]:
    files = {"train": "train.csv", "dev": "val.csv", "test": "test.csv"}
    for split, name in files.items():
        atomic_write_text(out / name, _csv(mc_rows(_rng("demo-mc", split, seed), sizes[split], split), split))
    return files


GENERATORS: dict[str, Callable[[Path, dict[str, int], int], dict[str, str]]] = {
    "demo-pair": _write_pair,
    "demo-qa": _write_qa,
    "demo-mc": _write_mc,
}


def write_builtin(task: str, out_dir: str | Path, train_examples: int, dev_examples: int, seed: int) -> dict[str, str]:
    """Write a demo task's train, dev (and test) files into `out_dir`.

    Args:
        task: demo-pair, demo-qa or demo-mc.
        out_dir: the folder to write (created).
        train_examples, dev_examples: how many examples each split gets (test: as many as dev).
        seed: the generator seed (same seed, same bytes).
    Returns:
        split -> file name written.
    """
    if task not in GENERATORS:
        raise ValueError(f"no built-in dataset for task {task!r}; built-in tasks: {', '.join(GENERATORS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return GENERATORS[task](out, {"train": train_examples, "dev": dev_examples, "test": dev_examples}, seed)
