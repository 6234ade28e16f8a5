"""`labels reject | unreject | confirm | unconfirm PATH... -l LABEL [--search QUERY]`
through the CLI, on SQLite and PostgreSQL: what each prints, every reader after it
(show, list, export, gallery, search), and bad input: one line on stderr, exit 1,
nothing changed."""

from __future__ import annotations

import csv
import io
import json

import pytest
from sqlalchemy import select

from clikit import labels, ok, runner
from labels_cli.app import app
from labelsd.store.schema import Judgement as JudgementRow


@pytest.fixture
def library(store, tmp_path, monkeypatch):
    from test_search import add_library

    return add_library(store, tmp_path, monkeypatch, {"persian.jpg": ["fluffy"]})


def judged(store) -> list[tuple]:
    with store.read() as session:
        return sorted(session.execute(select(JudgementRow.sha256, JudgementRow.class_index,
                                             JudgementRow.verdict)).all())


def shown(db_url, path) -> dict:
    return json.loads(ok(labels(db_url, "show", path, "--json")))


def test_reject_then_every_reader_leaves_the_label_out(db_url, store, library, tmp_path):
    tabby = library["tabby.jpg"]
    assert ok(labels(db_url, "reject", tabby, "-l", "Tabby")) == f"{tabby}: tabby rejected\n"
    record = shown(db_url, tabby)
    assert [p["label"] for p in record["labels"]] == ["tiger cat", "Egyptian cat"]
    assert [(r["label"], r["source"]) for r in record["rejected"]] == [("tabby", "cli")]
    text = ok(labels(db_url, "show", tabby))
    assert "tabby (" not in text and "  rejected: tabby  [n02123045, class 281]  (cli, " in text
    assert tabby not in ok(labels(db_url, "search", "tabby", "--paths"))
    listed = {r["path"]: r for r in json.loads(ok(labels(db_url, "list", "--json")))}
    assert "tabby" not in [p["label"] for p in listed[tabby]["labels"]]
    exported = {r["path"]: r for r in json.loads(ok(labels(db_url, "export")))}
    assert exported[tabby] == listed[tabby] == record
    rows = {r["path"]: r for r in csv.DictReader(io.StringIO(ok(labels(db_url, "export", "--format", "csv"))))}
    assert (rows[tabby]["label1"], rows[tabby]["label2"], rows[tabby]["label3"]) == (
        "tiger cat", "Egyptian cat", "")
    page = tmp_path / "cats.html"
    ok(labels(db_url, "gallery", "cat", "--min-score", "0", "-o", str(page)))  # tiger cat 5%: under the floor
    figure = next(f for f in page.read_text().split("<figure")[1:] if "tabby.jpg" in f)
    assert "tiger cat" in figure and ">tabby<" not in figure and " tabby " not in figure.split("data-path")[0]


def test_confirm_marks_ranks_first_and_undoes_a_rejection(db_url, store, library):
    shy = library["shy_cat.jpg"]
    ok(labels(db_url, "reject", shy, "-l", "siamese_cat"))
    assert shy not in ok(labels(db_url, "search", "cat", "--paths"))
    assert ok(labels(db_url, "confirm", shy, "-l", "Siamese cat")) == f"{shy}: Siamese cat confirmed\n"
    assert ok(labels(db_url, "search", "cat", "--paths")).splitlines()[0] == shy
    assert "Siamese cat 5% (confirmed)" in ok(labels(db_url, "search", "cat"))
    assert "3. Siamese cat (5.0%)  [n02123597, class 284]  confirmed" in ok(labels(db_url, "show", shy))
    assert shown(db_url, shy)["labels"][2]["confirmed"] is True
    ok(labels(db_url, "unconfirm", shy, "-l", "siamese cat"))
    assert judged(store) == []


def test_search_changes_the_photos_found_that_carry_the_label(db_url, store, library, tmp_path):
    # no score floor: the shy cat (Siamese cat 5%) is found too, and lacks the label
    config = tmp_path / "floor0.toml"
    config.write_text("search_min_score = 0\n")
    result = labels(db_url, "reject", "--search", "cat", "-l", "tabby", config=config)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{library[n]}: tabby rejected" for n in ("tabby.jpg", "persian.jpg")]
    assert "1 photo(s) `labels search cat` found left as they were" in result.stderr  # shy_cat
    again = labels(db_url, "reject", "--search", "cat", "-l", "tabby", config=config)
    assert again.exit_code == 1 and "nothing was changed" in again.stderr
    assert len(judged(store)) == 2
    # named paths and a search together: one change
    ok(labels(db_url, "unreject", library["tabby.jpg"], "--search", "persian", "-l", "tabby"))
    assert judged(store) == []


@pytest.mark.parametrize(("setup", "args", "says"), [
    ([], ["reject", "{nowhere}", "-l", "tabby"], "{nowhere}: no such file"),
    ([], ["reject", "{untracked}", "-l", "tabby"], "{untracked} is not tracked by labelsd"),
    ([], ["reject", "{tabby}", "{retriever}", "-l", "tabby"],
     "{retriever} does not carry the label tabby"),
    ([], ["confirm", "{retriever}", "-l", "tabby"], "{retriever} does not carry the label tabby"),
    ([], ["reject", "{tabby}", "-l", "tabbby"], "no label is called 'tabbby'; did you mean tabby"),
    ([], ["reject", "{tabby}", "-l", "cat"], "'cat' is not one label but a word for"),
    ([["reject", "{tabby}", "-l", "tabby"]], ["reject", "{persian}", "{tabby}", "-l", "tabby"],
     "{tabby}: tabby is already rejected"),
    ([["confirm", "{tabby}", "-l", "tabby"]], ["confirm", "{tabby}", "-l", "TABBY"],
     "{tabby}: tabby is already confirmed"),
    ([], ["unreject", "{tabby}", "-l", "tabby"], "{tabby}: tabby was never rejected"),
    ([], ["unconfirm", "{tabby}", "-l", "tabby"], "{tabby}: tabby was never confirmed"),
    ([], ["reject", "--search", "unicorn", "-l", "tabby"], "`labels search unicorn` finds no photo"),
])
def test_bad_input_is_one_line_exit_1_and_changes_nothing(db_url, store, library, tmp_path,
                                                         setup, args, says):
    (tmp_path / "photos" / "untracked.jpg").write_bytes(b"not seen by labelsd")
    where = {"nowhere": str(tmp_path / "photos" / "nope.jpg"),
             "untracked": str(tmp_path / "photos" / "untracked.jpg"),
             **{name.split(".")[0]: path for name, path in library.items()}}
    for step in setup:
        ok(labels(db_url, *(a.format(**where) for a in step)))
    before = judged(store)
    result = labels(db_url, *(a.format(**where) for a in args))
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labels: error: "), result.stderr
    assert says.format(**where) in lines[0] and "Traceback" not in result.output
    assert result.stdout == ""
    assert judged(store) == before


def test_a_path_or_search_is_needed_and_so_is_the_label(db_url, library):
    assert labels(db_url, "reject", "-l", "tabby").exit_code == 2
    assert labels(db_url, "reject", library["tabby.jpg"]).exit_code == 2


def test_every_judging_command_has_help():
    for command in ("reject", "unreject", "confirm", "unconfirm"):
        assert "-l, --label LABEL" in ok(runner.invoke(app, [command, "--help"]))


def test_sidecars_follow_a_rejection_and_its_undoing(db_url, store, tmp_path, monkeypatch):
    from test_xmp import make_photos, read_xmp, words

    folder, paths = make_photos(store, tmp_path, monkeypatch)
    config = tmp_path / "config.toml"
    config.write_text('xmp = "sidecar"\n')
    ok(labels(db_url, "reject", paths["tabby.jpg"], "-l", "tabby", config=config))
    xmp = read_xmp(folder / "tabby.jpg.xmp")
    assert words(xmp, "Xmp.dc.subject") == ["tiger cat"]
    assert words(xmp, "Xmp.labelsd.suppressed") == ["tabby"]
    ok(labels(db_url, "unreject", paths["tabby.jpg"], "-l", "tabby", config=config))
    xmp = read_xmp(folder / "tabby.jpg.xmp")
    assert words(xmp, "Xmp.dc.subject") == ["tabby", "tiger cat"] and "Xmp.labelsd.suppressed" not in xmp
    # tabby's is up to date; unsure.jpg (nothing above xmp_min_score, no tag) gets none (issue 31)
    said = ok(labels(db_url, "xmp", "write"))
    assert said.startswith("1 sidecar(s) written, 1 already up to date, 1 photo(s) skipped")
    assert judged(store) == []
