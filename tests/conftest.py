"""Shared fixtures: real SQLite files in tmp_path, a throwaway PostgreSQL, a real
InceptionV3 with random weights; and the markers `make test-fast` selects on.

Markers are given by what a test uses, so nobody has to remember them: a test
that needs the weights fixtures (TensorFlow) is `tf`, one that runs on the
PostgreSQL server is `pg`; `userns` is set by hand on tests that need user
namespaces. `make test-fast` runs `-m "not tf and not pg and not userns"`.
"""

from __future__ import annotations

import collections
import itertools
import os
import warnings

import pytest

# ---------------------------------------------------------------------------
# Markers
# ---------------------------------------------------------------------------

TF_FIXTURES = {"weights_files", "weights_file", "biased_weights_file"}
PG_FIXTURES = {"pg_server", "pg_url"}


def pytest_configure(config):
    # Registered here, not in pyproject.toml, so a copy of this conftest works alone.
    for line in ("tf: needs TensorFlow (given by the weights fixtures, or set by hand)",
                 "pg: runs against the throwaway PostgreSQL server (given by the pg fixtures)",
                 "userns: needs unprivileged user namespaces (unshare -Urm)"):
        config.addinivalue_line("markers", line)


def pytest_collection_modifyitems(items):
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        if names & TF_FIXTURES:
            item.add_marker(pytest.mark.tf)
        if names & PG_FIXTURES or params.get("db_url") == "postgresql":
            item.add_marker(pytest.mark.pg)


# ---------------------------------------------------------------------------
# Model fixtures (owned by the classifier, labelsd.model). A real InceptionV3
# with random weights is built ONCE per session and saved as the legacy .h5
# layout keras downloads, as a Keras 3 .weights.h5, and as a "biased" legacy
# .h5 whose top bias makes every image come out as BIASED_CLASS first.
# Service tests pass `weights_file` (or `biased_weights_file`) via --weights.
# ---------------------------------------------------------------------------

BIASED_CLASS = 281  # tabby

WeightsFiles = collections.namedtuple("WeightsFiles", "legacy_h5 keras3 biased_h5")


def _write_keras2_h5(path, layers):
    """Write [(layer_name, [(weight_name, array)])] in the layout of the file keras
    downloads (keras 2 `save_weights` to .h5): root attrs layer_names/backend/
    keras_version, one group per layer with weight_names, datasets under them, and
    no Keras 3 top_level_model_weights group. Loading is by order, as for the real file."""
    import h5py
    import numpy as np

    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([name.encode() for name, _ in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.1.2"
        for name, weights in layers:
            group = f.create_group(name)
            names = [f"{name}/{w}:0".encode() for w, _ in weights]
            group.attrs["weight_names"] = np.array(names, dtype="S") if names else np.array([], dtype="S1")
            for wname, value in zip(names, (v for _, v in weights)):
                group.create_dataset(wname.decode(), data=value)


@pytest.fixture(scope="session")
def weights_files(tmp_path_factory):
    import keras
    import numpy as np

    keras.utils.set_random_seed(1234)
    model = keras.applications.InceptionV3(weights=None)
    layers = []
    for layer in model.layers:
        # keras' legacy order: trainable then non-trainable (BN: beta, moving_mean, moving_variance)
        variables = list(layer.trainable_weights) + list(layer.non_trainable_weights)
        layers.append((layer.name, [(v.path.split("/")[-1], np.asarray(v.numpy())) for v in variables]))

    folder = tmp_path_factory.mktemp("weights")
    legacy = folder / "inception_v3_weights_tf_dim_ordering_tf_kernels.h5"
    _write_keras2_h5(legacy, layers)
    keras3 = folder / "inception_v3.weights.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # keras' np.array(x) under numpy 2
        model.save_weights(keras3)

    top_name, top_weights = layers[-1]
    kernel, bias = (value for _, value in top_weights)
    bias = bias.copy()
    bias[BIASED_CLASS] += 12.0  # random logits are near 0: ~0.99 for this class, others stay > 0
    biased = folder / "inception_v3_biased_281.h5"
    _write_keras2_h5(biased, layers[:-1] + [(top_name, [("kernel", kernel), ("bias", bias)])])
    return WeightsFiles(legacy, keras3, biased)


@pytest.fixture
def weights_file(weights_files):
    return weights_files.legacy_h5


@pytest.fixture(scope="session")
def biased_weights_file(weights_files):
    return weights_files.biased_h5


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    """KERAS_HOME in an empty folder, and any download fails as it would offline;
    the path InceptionV3's official weights would be cached at."""
    from urllib.error import URLError

    from labelsd.model import weights

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(weights, "urlopen", offline)
    return tmp_path / "keras" / "models" / weights.OFFICIAL_FILENAME


# --------------------------------------------------------------- end of model fixtures


# ---------------------------------------------------------------------------
# Store fixtures: a real database per test, on SQLite and on PostgreSQL
# (`db_url` is parametrized over both backends, below).
# ---------------------------------------------------------------------------


@pytest.fixture
def store(db_url):
    from labelsd.store.engine import open_store

    s = open_store(db_url)
    yield s
    s.close()


@pytest.fixture(scope="session")
def _empty_config(tmp_path_factory):
    """One empty config file for every test (outside each test's tmp_path, whose
    contents some tests list)."""
    path = tmp_path_factory.mktemp("config") / "empty-labels-config.toml"
    path.touch()
    return path


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path, monkeypatch, _empty_config):
    """No test reads the developer's own config or database, nor the machine's
    /etc/labels/config.toml (a real installation beside the test run): every test,
    and every process it starts with this environment, reads an empty config file
    of the suite's (LABELS_CONFIG). A test of the lookup itself unsets it."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    for var in ("LABELS_DB", "LABELS_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LABELS_CONFIG", str(_empty_config))
    monkeypatch.setattr("labelsd.config.SYSTEM_CONFIG", tmp_path / "etc-labels-config.toml")

# --------------------------------------------------------------- end of store fixtures


# ---------------------------------------------------------------------------
# PostgreSQL fixtures (owned by the PostgreSQL work; tests/pgserver.py).
# One throwaway cluster per test session (unix socket in a temp folder, fsync
# off), a fresh database per test. Every test that uses `db_url` or `store`
# runs against SQLite and PostgreSQL.
# Without the PostgreSQL binaries the postgresql cases skip, or FAIL when CI=true
# (CI installs them: make test-deps, scripts/install-test-deps.sh).
# ---------------------------------------------------------------------------

def _pg_missing(reason):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"PostgreSQL is required in CI: {reason} "
                     "(make test-deps / scripts/install-test-deps.sh installs it)", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def pg_server():
    """The session's PostgreSQL cluster (a tests.pgserver.PgServer)."""
    from pgserver import PgServer, PgServerError, find_bindir

    if find_bindir() is None:
        _pg_missing("initdb/postgres not found (apt-get install postgresql, or set PG_BINDIR)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _pg_missing("the psycopg driver is not installed (pip install 'psycopg[binary]')")
    server = PgServer()
    try:
        server.start()
    except PgServerError as err:
        _pg_missing(str(err))
    yield server
    server.stop()


_pg_database_numbers = itertools.count(1)


@pytest.fixture
def pg_url(pg_server):
    """SQLAlchemy URL of a fresh, empty database in the session's cluster."""
    name = f"test_{next(_pg_database_numbers)}"
    url = pg_server.create_database(name)
    yield url
    pg_server.drop_database(name)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("pg_url")
    return str(tmp_path / "db" / "labels.db")

# --------------------------------------------------------------- end of PostgreSQL fixtures


# ---- labels serve's route tests (test_web_routes, _judge, _similar, _thumbs) --------------
# Each such module defines a module-scoped `template` (weblib.LibraryTemplate); a module
# that needs another library defines `lib` itself.


@pytest.fixture
def lib(template):
    """A fresh copy of the module's web library, for one test."""
    return template.fresh()


@pytest.fixture
def client(lib, tmp_path):
    """Starlette's test client over that library, its thumbnails in the test's folder."""
    from weblib import web_client

    with web_client(lib, tmp_path / "thumbs") as c:
        yield c
    c.site.close()
