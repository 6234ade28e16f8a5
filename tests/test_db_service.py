"""The service and its database file (issue 15, items 3 and 8; issue 16): one
service per SQLite file, a file deleted or replaced under the service ends it
with an error, and a node whose start failed is never shown as running."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import types

import pytest

from labelsd.config import load_settings
from labelsd.errors import LabelsError, StoreUnavailable
from labelsd.lifecycle import Service
from labelsd.store import nodes
from labelsd.store.dbfile import DatabaseLost, ServedFile
from labelsd.store.engine import open_store
from labelsd.store.schema import Node


def _served(tmp_path):
    store = open_store(str(tmp_path / "labels.db"))
    return store, ServedFile.of(store)


def test_a_second_service_on_one_sqlite_file_is_refused_and_cli_processes_are_not(tmp_path):
    store, first = _served(tmp_path)
    first.claim()
    try:
        second = ServedFile.of(store)
        with pytest.raises(StoreUnavailable, match=rf"another labelsd \(pid {os.getpid()}\) "
                                                   r"already serves .*PostgreSQL"):
            second.claim()
        with open_store(str(tmp_path / "labels.db")) as cli:  # `labels status` still opens it
            assert cli.counts()["pending"] == 0
    finally:
        first.release()
    again = ServedFile.of(store)
    again.claim()  # released: the next service may start
    again.release()
    store.close()


def test_a_postgresql_store_has_no_served_file():
    fake = types.SimpleNamespace(dialect="postgresql")
    assert ServedFile.of(fake) is None


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_the_file_deleted_or_replaced_under_the_service_is_noticed(tmp_path, how):
    store, served = _served(tmp_path)
    served.claim()
    try:
        served.check()  # unchanged: nothing to say
        db = tmp_path / "labels.db"
        if how == "deleted":
            db.unlink()
        else:
            (tmp_path / "restored.db").write_bytes(db.read_bytes())
            os.replace(tmp_path / "restored.db", db)
        with pytest.raises(DatabaseLost, match=f"was {how}"):
            served.check()
    finally:
        served.release()
        store.close()


def test_a_start_that_fails_after_registering_leaves_no_running_node(tmp_path, monkeypatch):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    db = str(tmp_path / "labels.db")
    monkeypatch.setattr("labelsd.model.spec.ModelSpec.check_weights", lambda self, weights: None)
    monkeypatch.setattr("labelsd.model.runtime.load_model",
                        lambda *a, **k: types.SimpleNamespace(name="stub", device="cpu"))
    monkeypatch.setattr("labelsd.model.runtime.describe", lambda classifier: "cpu, stub")

    def broken_pipeline(*args, **kwargs):
        raise LabelsError("the pipeline could not start")

    monkeypatch.setattr("labelsd.pipeline.runner.Pipeline", broken_pipeline)
    settings = load_settings(None, db=db, watch=(str(inbox),))
    with pytest.raises(LabelsError, match="could not start"), Service(settings) as service:
        service.start()
    with open_store(db) as store:
        [node] = nodes.list_nodes(store)
        assert not node.alive


def test_a_node_of_this_host_whose_process_is_gone_is_not_running(store):
    dead = subprocess.Popen(["true"])
    dead.wait()
    nodes.register(store, "crashed", model="m", device="cpu", watching=[])
    with store.write() as session:  # registered by a process that died during its start
        session.get(Node, "crashed").pid = dead.pid
    nodes.register(store, "live", model="m", device="cpu", watching=[])
    alive = {n.node_id: n.alive for n in nodes.list_nodes(store)}
    assert alive == {"crashed": False, "live": True}
    assert socket.gethostname()


def test_labels_status_does_not_call_a_node_that_crashed_during_start_running(tmp_path):
    from typer.testing import CliRunner

    from labels_cli.app import app

    db = str(tmp_path / "labels.db")
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open_store(db) as store:
        nodes.register(store, "crashed", model="m", device="cpu", watching=[])
        with store.write() as session:  # registered seconds ago by a process now gone
            session.get(Node, "crashed").pid = dead.pid
    result = CliRunner().invoke(app, ["--db", db, "status", "--json"])
    assert json.loads(result.stdout)["running"] is False, result.output
    assert result.exit_code == 3
