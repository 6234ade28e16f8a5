"""Settings precedence: flag > environment > config file > default."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from labelsd.config import Settings, config_path, default_db, load_settings
from labelsd.errors import ConfigError


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('db = "/from/file.db"\nweights = "/from/file.h5"\n'
                    'watch = ["/photos/a", "/photos/b"]\nbatch_size = 4\ndevice = "cpu"\n')
    return path


def test_defaults_without_anything(tmp_path):
    s = load_settings(env={})
    assert s == Settings(db=default_db())
    assert s.db.endswith("labels/labels.db") and str(tmp_path) in s.db  # XDG_DATA_HOME


def test_file_beats_default(config_file):
    s = load_settings(str(config_file), env={})
    assert (s.db, s.weights, s.batch_size, s.device) == ("/from/file.db", "/from/file.h5", 4, "cpu")
    assert s.watch == ("/photos/a", "/photos/b")
    assert s.config_file == str(config_file)


def test_env_beats_file(config_file):
    env = {"LABELS_DB": "/from/env.db", "LABELS_WEIGHTS": "/from/env.h5"}
    s = load_settings(str(config_file), env=env)
    assert (s.db, s.weights) == ("/from/env.db", "/from/env.h5")
    assert s.batch_size == 4  # untouched by env


def test_flag_beats_env(config_file):
    env = {"LABELS_DB": "/from/env.db"}
    s = load_settings(str(config_file), env=env, db="/from/flag.db", batch_size=16, watch=None)
    assert (s.db, s.batch_size, s.watch) == ("/from/flag.db", 16, ("/photos/a", "/photos/b"))


def test_labels_config_env_names_the_file(config_file):
    assert load_settings(env={"LABELS_CONFIG": str(config_file)}).db == "/from/file.db"


def test_user_config_found_without_flags(tmp_path, monkeypatch):
    user = tmp_path / "xdg-config" / "labels" / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('db = "relative.db"\n')
    s = load_settings(env={})
    assert s.db == str(user.parent / "relative.db")  # relative to the config file


def test_system_config_is_the_last_resort(tmp_path, monkeypatch):
    system = tmp_path / "etc.toml"
    system.write_text('db = "/var/lib/labelsd/labels.db"\n')
    monkeypatch.setattr("labelsd.config.SYSTEM_CONFIG", system)
    assert load_settings(env={}).db == "/var/lib/labelsd/labels.db"


def test_no_test_reads_the_machines_config():
    """A machine with /etc/labels/config.toml (a real installation, another model)
    must not change what the suite sees, in this process or in the processes tests
    start (`labels scan` as a subprocess, the service): they read the suite's empty config."""
    own = config_path()
    assert own is not None and own.name == "empty-labels-config.toml" and own.read_text() == ""
    child = subprocess.run([sys.executable, "-c", "from labelsd.config import config_path; "
                            "print(config_path())"], capture_output=True, text=True, timeout=60,
                           env=os.environ.copy())
    assert child.stdout.strip() == str(own), child.stderr


def test_url_db_is_kept_as_is(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('db = "postgresql+psycopg://u@localhost/labels"\n')
    assert load_settings(str(cfg), env={}).db == "postgresql+psycopg://u@localhost/labels"


@pytest.mark.parametrize("content, message", [
    ("db = ", "not valid TOML"),
    ('colour = "red"\n', "unknown setting"),
    ('device = "tpu"\n', "device must be one of"),
    ("batch_size = 0\n", "batch size"),
])
def test_bad_config_is_a_clear_error(tmp_path, content, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_settings(str(cfg), env={})


def test_named_config_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(str(tmp_path / "nope.toml"), env={})


def test_xmp_settings_from_the_file_and_their_checks(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('xmp = "sidecar"\nxmp_min_score = 0.5\n')
    s = load_settings(str(path), env={})
    assert (s.xmp, s.xmp_min_score) == ("sidecar", 0.5)
    assert load_settings(str(path), env={}, xmp="off").xmp == "off"  # the flag wins
    assert (Settings().xmp, Settings().xmp_min_score) == ("off", 0.2)
    for bad, message in (('xmp = "embedded"', "xmp must be one of off, sidecar"),
                         ("xmp_min_score = 2", "xmp_min_score must be a number from 0 to 1"),
                         ('xmp_min_score = "high"', "xmp_min_score must be a number")):
        path.write_text(bad + "\n")
        with pytest.raises(ConfigError, match=message):
            load_settings(str(path), env={})


def test_the_search_floor_is_a_score_or_a_percentage(tmp_path):
    path = tmp_path / "config.toml"
    assert Settings().search_min_score == 0.1  # bench/scorefloor.py's evidence
    for text, key, value in (("search_min_score = 0.25", "search_min_score", 0.25),
                             ('search_min_score = "5%"', "search_min_score", 0.05),
                             ("search_min_score = 0", "search_min_score", 0.0),
                             ('xmp_min_score = "30%"', "xmp_min_score", 0.3)):
        path.write_text(text + "\n")
        assert getattr(load_settings(str(path), env={}), key) == value
    for bad in ("search_min_score = 10", 'search_min_score = "lots"', "search_min_score = true",
                'search_min_score = "150%"'):
        path.write_text(bad + "\n")
        with pytest.raises(ConfigError, match="search_min_score must be a number from 0 to 1"):
            load_settings(str(path), env={})
