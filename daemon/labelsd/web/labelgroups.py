"""The labels of a library grouped the way search understands them: a group is
a word `labels search` takes (`cat`), holding every label that word finds
(tabby, Persian cat, ... cougar). Each label goes to the first group of GROUPS
whose search finds it, most specific words first, so `tabby` is under cat, not
under mammal or animal. Membership is `taxonomy.select_classes` itself: a
group's link finds exactly its labels (and their other images).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from labelsd.model.taxonomy import classes, select_classes

# Most specific first. Each is a WordNet word search understands (a test checks
# every one selects classes); what none of them finds is "other".
GROUPS = (
    "dog", "wolf", "fox", "cat", "bear", "monkey", "primate", "rodent", "ungulate", "mammal",
    "bird", "fish", "snake", "lizard", "turtle", "frog", "reptile", "amphibian",
    "butterfly", "beetle", "insect", "spider", "arachnid", "crab", "crustacean", "mollusk",
    "invertebrate", "animal",
    "car", "truck", "bus", "train", "boat", "ship", "aircraft", "bicycle", "vehicle",
    "fruit", "vegetable", "food",
    "musical instrument", "footwear", "hat", "clothing", "furniture", "kitchen utensil", "tool",
    "weapon", "computer", "electronic equipment", "ball", "sports equipment", "toy",
    "bottle", "container", "building", "structure", "fungus", "flower", "plant",
    "geological formation", "person", "appliance", "fabric", "device", "covering", "equipment",
    "implement", "artifact",
)
OTHER = "other"


@dataclass
class LabelGroup:
    word: str  # the search word; OTHER for what no group word finds
    count: int = 0
    labels: list[tuple[str, int]] = field(default_factory=list)  # (label, images), most first


@functools.cache
def _group_of_label() -> dict[str, str]:
    """Each ImageNet label -> the first GROUPS word whose search finds it."""
    found: dict[str, str] = {}
    by_index = {cls.index: cls.label for cls in classes()}
    for word in GROUPS:
        for index in select_classes(word):
            found.setdefault(by_index[index], word)
    return found


def group_labels(counts: list[tuple[str, int]]) -> list[LabelGroup]:
    """Labels with their image counts (`stats.label_counts`) as groups, the largest
    first, each group's labels most frequent first; OTHER last."""
    group_of = _group_of_label()
    groups: dict[str, LabelGroup] = {}
    for label, n in counts:
        word = group_of.get(label, OTHER)
        group = groups.setdefault(word, LabelGroup(word))
        group.count += n
        group.labels.append((label, n))
    for group in groups.values():
        group.labels.sort(key=lambda pair: (-pair[1], pair[0].casefold()))
    return sorted(groups.values(), key=lambda g: (g.word == OTHER, -g.count, g.word))


__all__ = ["GROUPS", "OTHER", "LabelGroup", "group_labels"]
