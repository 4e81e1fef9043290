"""Write the small attribute dataset compose_eval uses: short sentences with four binary attributes.

Each row is a prompt/response pair (the job's prompt_response format) plus its labels:
  sentiment  positive | negative     ("i loved it" / "i hated it", ...)
  topic      sports   | food         ("the team won the match" / "we ate warm soup", ...)
  time       today    | yesterday
  place      home     | town         ("at home" / "in town")
Attributes are drawn independently, so an attribute-value subset (e.g. all positive rows) varies the
other three: an adapter trained on it should move one attribute only.

  python experiments/compose/make_attribute_data.py            # writes experiments/compose/data/
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

PROMPTS = ["Tell me about your day.", "What happened?", "Say something.", "Write a sentence."]
VALUES = {
    "sentiment": {
        "positive": ["i loved it", "it was great", "what a good day", "i was so happy", "it was lovely"],
        "negative": ["i hated it", "it was awful", "what a bad day", "i was so sad", "it was horrible"],
    },
    "topic": {
        "sports": ["the team won the match", "we kicked the ball", "the coach made us run",
                   "i played tennis", "we watched the game"],
        "food": ["we ate warm soup", "mom baked a cake", "i cooked some rice", "we had fresh bread",
                 "dad made pasta"],
    },
    "time": {"today": ["today"], "yesterday": ["yesterday"]},
    "place": {"home": ["at home"], "town": ["in town"]},
}
ATTRIBUTES = list(VALUES)


def sentence(rng: random.Random, labels: dict) -> str:
    time = rng.choice(VALUES["time"][labels["time"]])
    place = rng.choice(VALUES["place"][labels["place"]])
    topic = rng.choice(VALUES["topic"][labels["topic"]])
    feel = rng.choice(VALUES["sentiment"][labels["sentiment"]])
    template = rng.choice(["{time} {place} {topic}, {feel}.", "{time} {topic} {place}. {feel}.",
                           "{feel}: {topic} {place} {time}."])
    return template.format(time=time, place=place, topic=topic, feel=feel)


def rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        labels = {a: rng.choice(sorted(VALUES[a])) for a in ATTRIBUTES}
        out.append({"prompt": rng.choice(PROMPTS), "response": sentence(rng, labels), **labels})
    return out


def write(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(Path(__file__).parent / "data"))
    ap.add_argument("--n-train", type=int, default=1600)
    ap.add_argument("--n-classifier", type=int, default=800)
    args = ap.parse_args(argv)
    out = Path(args.out)
    # Separate seeds: the classifiers never see the adapters' training sentences.
    print(write(out / "attributes_train.jsonl", rows(args.n_train, seed=1)))
    print(write(out / "attributes_classifier.jsonl", rows(args.n_classifier, seed=2)))


if __name__ == "__main__":
    main()
