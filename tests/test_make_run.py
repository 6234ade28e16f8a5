"""`make run`: what it runs (scripts/make_run.py around labelsd) prints, once the
service is ready, the one line that queries it from another terminal."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from servicekit import LABELSD

ROOT = Path(__file__).resolve().parent.parent


def _bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A terminal's environment with nothing of the developer's: PATH without the venv
    (the `labels` printed is found by its full path), an empty config and keras cache."""
    config = tmp_path / "empty.toml"
    config.touch()
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
            "LABELS_CONFIG": str(config), "KERAS_HOME": str(tmp_path / "keras"),
            "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": os.environ.get("PYTHONPATH", ""), **extra}


@contextmanager
def _wrapper(tmp_path: Path, env: dict[str, str], *args: str):
    """scripts/make_run.py with `args`, its stdout a pipe and labelsd's log a file:
    (the process, the log); killed at the end if the test left it running."""
    log = tmp_path / "labelsd.log"
    with open(log, "wb") as err:
        wrapper = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "make_run.py"), *args],
                                   stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    try:
        yield wrapper, log
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait(10)


def test_make_run_prints_the_line_to_query_it(tmp_path, weights_file):
    """`make run`'s wrapper prints one line once labelsd is ready, and that line,
    typed in another terminal, queries it."""
    db, inbox = tmp_path / "labels.db", tmp_path / "inbox"
    inbox.mkdir()
    env = _bare_env(tmp_path)
    if shutil.which("labels", path=env["PATH"]):
        pytest.skip("a `labels` on /usr/bin or /bin would be the one printed")
    # the wrapper's --weights: as the Makefile passes WEIGHTS=
    with _wrapper(tmp_path, env, "--db", str(db), "--weights", str(weights_file), "--",
                  str(LABELSD), "--watch", str(inbox), "--db", str(db), "--weights", str(weights_file)
                  ) as (wrapper, log):
        line = wrapper.stdout.readline()  # the wrapper prints nothing else
        assert line.startswith("labelsd is ready. Query it from another terminal:  "), (
            line + log.read_text(errors="replace")[-3000:])
        command = line.split("terminal:", 1)[1].split()
        assert command == [str(LABELSD.with_name("labels")), "--db", str(db), "search", "cat"]
        status = subprocess.run([*command[:3], "status", "--json"], capture_output=True, text=True,
                                env=env, timeout=60)
        facts = json.loads(status.stdout)
        assert facts["running"] is True  # ready means running
        # the defaults: `auto` measured the precisions on this CPU and says which it runs and why
        assert facts["auto"]["chosen"] == facts["precision"] and facts["auto"]["why"].startswith("auto: ")
        query = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
        assert query.returncode == 0, query.stderr
        wrapper.send_signal(signal.SIGTERM)  # as Ctrl-C's end of the story: labelsd drains
        assert wrapper.wait(60) == 0, log.read_text(errors="replace")[-3000:]


# --------------------------------------------------------------------------- the model it runs


def _make_run_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_run", ROOT / "scripts" / "make_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_start_offline_falls_back_to_lite0_in_one_line(offline_empty_cache, tmp_path, capsys):
    make_run = _make_run_module()
    model, said = make_run.choose_model(None, None, tmp_path / "bin" / "labels")
    assert model == "efficientnet_lite0"
    assert "\n" not in said and said.startswith("make run: labelling with EfficientNet-Lite0")
    assert "InceptionV3" in said and "Temporary failure in name resolution" in said  # which, and why
    assert f"`{tmp_path / 'bin' / 'labels'} model fetch`" in said and "make run MODEL=inception_v3" in said
    # what it said while trying: the download it attempted, one line
    assert capsys.readouterr().out.startswith("make run: downloading InceptionV3's ImageNet weights")


def test_a_model_chosen_anywhere_never_falls_back(offline_empty_cache, tmp_path, monkeypatch):
    make_run = _make_run_module()
    labels = tmp_path / "labels"
    assert make_run.choose_model("inception_v3", None, labels) == ("inception_v3", None)  # MODEL=
    assert make_run.choose_model(None, "/w.h5", labels) == (None, None)  # WEIGHTS=
    for line in ('model = "inception_v3"\n', 'weights = "/srv/w.h5"\n'):  # the config
        config = tmp_path / "config.toml"
        config.write_text(line)
        monkeypatch.setenv("LABELS_CONFIG", str(config))
        assert make_run.choose_model(None, None, labels) == (None, None), line
    monkeypatch.setenv("LABELS_CONFIG", str(tmp_path / "empty.toml"))
    (tmp_path / "empty.toml").touch()
    monkeypatch.setenv("LABELS_WEIGHTS", "/srv/w.h5")  # the environment
    assert make_run.choose_model(None, None, labels) == (None, None)
    monkeypatch.setenv("LABELS_CONFIG", str(tmp_path / "missing.toml"))  # labelsd will say so
    assert make_run.choose_model(None, None, labels) == (None, None)


@pytest.mark.tf  # EfficientNet-Lite0 is converted (TensorFlow, in a child) and served
def test_make_run_offline_ends_with_a_service_labelling_with_lite0(tmp_path):
    """`make run` on a machine that cannot download InceptionV3's weights (a proxy that
    refuses): one line says it runs EfficientNet-Lite0 and why, then the service is
    ready, and the cat that lands in the inbox is found by `labels search cat`."""
    import skimage

    db, inbox = tmp_path / "labels.db", tmp_path / "inbox"
    inbox.mkdir()
    env = _bare_env(tmp_path, https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    with _wrapper(tmp_path, env, "--db", str(db), "--",
                  str(LABELSD), "--watch", str(inbox), "--db", str(db), "--precision", "fp32"
                  ) as (wrapper, log):
        lines = [wrapper.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("make run: downloading InceptionV3's"), lines
        assert lines[1].startswith("make run: labelling with EfficientNet-Lite0"), lines
        assert lines[2].startswith("labelsd is ready."), lines + [log.read_text(errors="replace")[-3000:]]
        labels = str(LABELSD.with_name("labels"))
        shutil.copyfile(Path(skimage.__file__).parent / "data" / "chelsea.png", tmp_path / "cat.png")
        os.replace(tmp_path / "cat.png", inbox / "cat.png")

        def found():
            done = subprocess.run([labels, "--db", str(db), "search", "cat", "--json"],
                                  capture_output=True, text=True, env=env, timeout=60)
            return json.loads(done.stdout) if done.returncode == 0 and done.stdout.strip() != "[]" else None

        from servicekit import wait_for

        [record] = wait_for(found, 180, "the cat labelled", interval=1.0,
                            on_timeout=lambda: log.read_text(errors="replace")[-3000:])
        assert record["model"] == "EfficientNetLite0/imagenet"
        wrapper.send_signal(signal.SIGTERM)
        assert wrapper.wait(60) == 0, log.read_text(errors="replace")[-3000:]
