"""Stage builtin_corpus of the pre-training pipeline: the text to pre-train on, one sentence per line.

    python -m stages.builtin_corpus --params pretrain/params.yaml --out pretrain/data/corpus

``corpus.source: builtin`` generates a deterministic, learnable demo corpus (no third-party text):
short stories, each about one topic and one person, so the words of a document predict each other
(masked LM) and a sentence from another document usually gives itself away (next sentence).
``corpus.source: local`` copies ``corpus.local_file`` (one sentence per line, a blank line between
documents). The output folder holds ``corpus.txt`` and ``SOURCE.json`` (origin, sha256, counts).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from bert.io.download import sha256_of
from bert.io.fileio import atomic_copy, atomic_write_text
from bert.io.settings import at_least, one_of
from stages._lib.common import atomic_outputs, run_stage, stage_parser, write_json
from stages._lib.params import DEFAULT_PRETRAIN_PARAMS, load_section

logger = logging.getLogger("stages.builtin_corpus")
CORPUS_FILE = "corpus.txt"
SOURCE_FILE = "SOURCE.json"


@dataclass(frozen=True)
class BuiltinCorpusParams:
    """Section ``corpus.builtin``."""

    documents: int = field(metadata=at_least(2))
    seed: int


@dataclass(frozen=True)
class CorpusParams:
    """Section ``corpus``."""

    source: str = field(metadata=one_of("builtin", "local"))
    local_file: str  # source local: the text file
    builtin: BuiltinCorpusParams


@dataclass(frozen=True)
class Topic:
    """The words of one kind of story (nouns take a regular plural in -s)."""

    places: tuple[str, ...]
    nouns: tuple[str, ...]
    verbs: tuple[str, ...]  # past tense, transitive
    adjectives: tuple[str, ...]


NAMES = ("anna", "ben", "clara", "david", "emma", "felix", "grace", "henry", "iris", "jack", "kate", "leo",
         "mia", "noah", "olga", "paul", "rosa", "sam", "tina", "victor")
TOPICS = {
    "kitchen": Topic(("kitchen", "oven", "table"), ("bread", "cake", "spoon", "plate", "onion", "cookie", "pot", "cup"),
                     ("baked", "cooked", "stirred", "sliced", "tasted", "washed"),
                     ("warm", "sweet", "salty", "fresh", "crisp", "hot")),
    "farm": Topic(("farm", "barn", "field"), ("cow", "horse", "goat", "tractor", "fence", "chicken", "pig", "egg"),
                  ("milked", "fed", "plowed", "herded", "painted", "counted"),
                  ("muddy", "green", "quiet", "wide", "old", "brown")),
    "sea": Topic(("sea", "harbor", "island"), ("boat", "ship", "wave", "sail", "shell", "anchor", "net", "crab"),
                 ("sailed", "rowed", "fished", "pulled", "cleaned", "tied"),
                 ("blue", "deep", "calm", "stormy", "wet", "salty")),
    "city": Topic(("city", "street", "market"), ("bus", "train", "tower", "bridge", "shop", "taxi", "car", "light"),
                  ("drove", "passed", "crossed", "visited", "watched", "parked"),
                  ("busy", "loud", "tall", "bright", "crowded", "modern")),
    "forest": Topic(("forest", "river", "hill"), ("tree", "bird", "owl", "path", "rock", "bear", "mushroom", "nest"),
                    ("climbed", "hunted", "followed", "found", "touched", "heard"),
                    ("dark", "wild", "tall", "quiet", "mossy", "cool")),
    "school": Topic(("school", "library", "classroom"), ("book", "pencil", "desk", "lesson", "student", "exam", "map", "letter"),
                    ("read", "wrote", "studied", "learned", "opened", "checked"),
                    ("smart", "young", "strict", "new", "long", "easy")),
    "space": Topic(("space", "station", "orbit"), ("rocket", "star", "planet", "moon", "comet", "telescope", "robot", "signal"),
                   ("launched", "flew", "landed", "tracked", "repaired", "measured"),
                   ("distant", "cold", "bright", "huge", "silent", "strange")),
    "music": Topic(("stage", "studio", "concert"), ("piano", "guitar", "drum", "song", "band", "singer", "violin", "melody"),
                   ("played", "sang", "practiced", "tuned", "recorded", "wrote"),
                   ("loud", "soft", "slow", "happy", "sad", "famous")),
}
# {n}: a noun, {n2}: another, {ns}: a noun's plural, {v}: a verb, {a}/{a2}: adjectives, {p}: a place.
TEMPLATES = (
    "{name} {v} the {a} {n}.",
    "The {n} was {a} and {a2}.",
    "{name} saw two {ns} near the {p}.",
    "Then {name} {v} a {n} in the {p}.",
    "The {a} {ns} were by the {p}.",
    "After that the {n} and the {n2} stayed in the {p}.",
    "Every day {name} {v} the {n2}.",
    "Later {name} went to the {a} {p} with a {n}.",
)
FUNCTION_WORDS = ("the", "was", "and", "saw", "two", "near", "then", "a", "in", "were", "by", "after", "that",
                  "stayed", "every", "day", "later", "went", "to", "with", ".")


def lexicon() -> list[str]:
    """Every word the generator writes, lower-cased, plurals excluded (they add "s"), sorted."""
    words = set(NAMES) | set(FUNCTION_WORDS)
    for topic in TOPICS.values():
        words.update(topic.places + topic.nouns + topic.verbs + topic.adjectives)
    return sorted(words)


def generate_corpus(num_documents: int, seed: int) -> str:
    """A deterministic corpus: `num_documents` short stories of 8 to 24 sentences.

    Args:
        num_documents: documents to write (about 700 bytes each).
        seed: seeds the generator's own random.Random.
    Returns:
        The text: one sentence per line, a blank line after each document.
    """
    rng = random.Random(seed)
    names = sorted(TOPICS)
    lines = []
    for _ in range(num_documents):
        topic, name = TOPICS[rng.choice(names)], rng.choice(NAMES).capitalize()
        for _ in range(rng.randint(8, 24)):
            n, n2 = rng.sample(topic.nouns, 2)
            a, a2 = rng.sample(topic.adjectives, 2)
            sentence = rng.choice(TEMPLATES).format(
                name=name, n=n, n2=n2, ns=n + "s", v=rng.choice(topic.verbs), a=a, a2=a2, p=rng.choice(topic.places))
            lines.append(sentence[0].upper() + sentence[1:])
        lines.append("")
    return "\n".join(lines) + "\n"


def count_documents(text: str) -> int:
    """Documents in a corpus text (runs of non-blank lines)."""
    count, inside = 0, False
    for line in text.splitlines():
        if line.strip() and not inside:
            count += 1
        inside = bool(line.strip())
    return count


def write_corpus(params: CorpusParams, out: Path) -> dict:
    """Write corpus.txt into the empty folder `out`; returns the SOURCE.json record."""
    target = out / CORPUS_FILE
    if params.source == "builtin":
        atomic_write_text(target, generate_corpus(params.builtin.documents, params.builtin.seed))
        origin = {"source": "builtin", "documents": params.builtin.documents, "seed": params.builtin.seed}
    else:
        local = Path(params.local_file)
        if not local.is_file():
            raise ValueError(f"corpus.local_file: {local} is not a file (expected text, one sentence per line)")
        atomic_copy(local, target)
        origin = {"source": "local", "local_file": str(local.resolve())}
    try:
        text = target.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"corpus.local_file: {params.local_file} is not UTF-8 text "
                         f"(byte {err.start}: {err.reason})") from None
    return {**origin, "sha256": sha256_of(target), "bytes": target.stat().st_size,
            "lines": len(text.splitlines()), "num_documents": count_documents(text)}


def main(argv: Optional[list[str]] = None) -> int:
    """CLI entry point; returns the exit status."""
    parser = stage_parser("builtin_corpus", __doc__, DEFAULT_PRETRAIN_PARAMS)
    parser.add_argument("--out", required=True, type=Path, help="the corpus folder to write")
    args = parser.parse_args(argv)

    def body() -> None:
        params = load_section("corpus", CorpusParams, args.params)
        with atomic_outputs(args.out) as (tmp,):
            tmp.mkdir()
            record = write_corpus(params, tmp)
            write_json(tmp / SOURCE_FILE, record)
        logger.info("corpus: %s, %d documents, %d bytes -> %s", record["source"], record["num_documents"],
                    record["bytes"], args.out / CORPUS_FILE)

    return run_stage("builtin_corpus", body, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
