"""The real `labels serve` process: ready quickly without TensorFlow, serving
until SIGTERM or Ctrl-C and then ending with status 0; the errors a person can
fix are one line and exit 1; `labels search` never pays for the web stack."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from webkit import LABELS, ServeProcess, serve_env
from weblib import open_library


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return open_library(tmp_path_factory.mktemp("web-serve"), cats=3)


def fetch(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_until_a_signal_then_exits_0(lib, tmp_path, sig):
    server = ServeProcess("--config", str(lib.config), "serve", "--port", "0",
                          env=serve_env(tmp_path)).start()
    try:
        assert server.url.startswith("http://127.0.0.1:") and "token" not in server.url
        status, body = fetch(server.url + "api/search?q=cat")
        assert status == 200 and len(json.loads(body)) == 3
        status, body = fetch(server.url + f"thumb/{lib.sha(lib.cats[0])}?size=128")
        assert status == 200 and body[:2] == b"\xff\xd8"
        # a browser's idle keep-alive connection does not hold the exit up
        idle = socket.create_connection(("127.0.0.1", int(server.base.rsplit(":", 1)[1].strip("/"))))
        idle.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    finally:
        code = server.stop(sig)
    idle.close()
    assert code == 0, "".join(server.lines)
    assert not any("Traceback" in line for line in server.lines)


def test_another_address_prints_a_token_once(lib, tmp_path):
    with ServeProcess("--config", str(lib.config), "serve", "--host", "0.0.0.0", "--port", "0",
                      env=serve_env(tmp_path)) as server:
        assert "?token=" in server.url
        port = server.base.rsplit(":", 1)[1].strip("/")
        with pytest.raises(urllib.error.HTTPError) as refused:
            fetch(f"http://127.0.0.1:{port}/api/search?q=cat")
        assert refused.value.code == 401
        token = server.url.split("?token=")[1]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/api/search?q=cat",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
    assert sum("token" in line for line in server.lines) == 1


def run_labels(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(LABELS), *args], capture_output=True, text=True, timeout=60, env=env)


def test_a_port_in_use_is_one_line_and_exit_1(lib, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        done = run_labels("--config", str(lib.config), "serve", "--port", str(port),
                          env=serve_env(tmp_path))
    finally:
        taken.close()
    assert done.returncode == 1
    assert done.stderr == f"labels: error: cannot serve on 127.0.0.1:{port}: the port is in use; " \
                          "choose another with --port\n"


@pytest.mark.parametrize("args, message", [
    (["--db", "{tmp}/nothing.db", "serve"], "no database at"),
    (["--config", "{config}", "serve", "--host", "no.such.host.invalid"], "cannot serve on"),
])
def test_what_a_person_can_fix_is_one_line_and_exit_1(lib, tmp_path, args, message):
    args = [a.format(tmp=tmp_path, config=lib.config) for a in args]
    done = run_labels(*args, "--port", "0", env=serve_env(tmp_path))
    assert done.returncode == 1 and done.stderr.startswith("labels: error: ") and message in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_serve_loads_no_tensorflow_and_search_no_web_stack(lib, tmp_path):
    # The app over the library, built as `labels serve` builds it: no TensorFlow, no SQLAlchemy.
    code = ("import sys; from labelsd.config import load_settings; "
            "from labelsd.web.app import create_app; from labelsd.web.site import ServeOptions, Site; "
            f"site = Site(load_settings({str(lib.config)!r}), ServeOptions(), None); create_app(site); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'sqlalchemy'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=serve_env(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    code = ("import atexit, sys; from labels_cli.app import main; atexit.register(lambda: print("
            "sorted({m.split('.')[0] for m in sys.modules} & {'starlette', 'jinja2', 'uvicorn'}), "
            "file=sys.stderr)); main()")
    done = subprocess.run([sys.executable, "-c", code, "--config", str(lib.config), "search", "cat"],
                          capture_output=True, text=True, timeout=60, env=serve_env(tmp_path))
    assert done.returncode == 0 and done.stderr.strip() == "[]", done.stderr


def test_serve_has_help():
    done = run_labels("serve", "--help")
    assert done.returncode == 0
    for option in ("--host", "--port", "--read-only", "--no-auth"):
        assert option in done.stdout
