"""Who may use `labels serve`: loopback needs no token but answers only loopback
names (DNS rebinding); any other address asks for a token (the config's, or one
made up and printed), given once as ?token= and kept in a cookie, or sent as a
Bearer header; --no-auth asks for none."""

from __future__ import annotations

import pytest

from labelsd.config import load_settings
from labelsd.errors import ConfigError
from labelsd.web import server
from labelsd.web.site import ServeOptions
from weblib import open_library, web_client

TOKEN = "s3cret-token-for-the-tests"


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return open_library(tmp_path_factory.mktemp("web-auth"), cats=1)  # only read here


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("example.org", False),
])
def test_which_addresses_are_loopback(host, loopback):
    assert server.is_loopback(host) is loopback


def test_the_token_asked_for(lib, tmp_path, monkeypatch):
    settings = load_settings(str(lib.config))
    assert server.choose_token(settings, ServeOptions()) == (None, False)
    made, printed = server.choose_token(settings, ServeOptions(host="0.0.0.0"))
    assert printed and len(made) >= 32
    assert server.choose_token(settings, ServeOptions(host="0.0.0.0", no_auth=True)) == (None, False)
    monkeypatch.setenv("LABELS_SERVE_TOKEN", TOKEN)
    settings = load_settings(str(lib.config))
    # a configured token is asked for on loopback too (other users of the machine reach it)
    assert server.choose_token(settings, ServeOptions()) == (TOKEN, False)
    assert server.choose_token(settings, ServeOptions(host="::")) == (TOKEN, False)


@pytest.mark.parametrize("token", ["short", "has space in it 123", 'quote"in"it-1234567', "semi;colon-123456789"])
def test_a_token_that_cannot_be_a_cookie_is_a_config_error(lib, monkeypatch, token):
    monkeypatch.setenv("LABELS_SERVE_TOKEN", token)
    with pytest.raises(ConfigError, match="serve_token"):
        load_settings(str(lib.config))


def test_a_token_once_in_the_url_then_a_cookie(lib, tmp_path):
    with web_client(lib, tmp_path / "thumbs", token=TOKEN, check_host=False,
                    host="photos.example:8470") as client:
        refused = client.get("/search?q=cat")
        assert refused.status_code == 401 and "needs its token" in refused.text
        assert "content-security-policy" in refused.headers
        assert client.get(f"/thumb/{lib.sha(lib.car)}").status_code == 401
        assert client.get("/api/search?q=cat").status_code == 401
        assert client.get("/?token=wrong").status_code == 401
        first = client.get(f"/search?q=cat&token={TOKEN}&page=1", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"] == "/search?q=cat&page=1"
        cookie = first.headers["set-cookie"]
        assert cookie.startswith(f"labels_token={TOKEN};") and "HttpOnly" in cookie
        assert "samesite=lax" in cookie.lower()
        assert client.get("/search?q=cat").status_code == 200  # the cookie from now on
        elsewhere = client.get(f"http://photos.example:8470//evil.example/?token={TOKEN}",
                               follow_redirects=False)
        assert elsewhere.headers["location"] == "/evil.example/"  # never to another site
        assert client.get(f"/thumb/{lib.sha(lib.car)}").status_code == 200
    client.site.close()
    with web_client(lib, tmp_path / "thumbs", token=TOKEN, check_host=False) as script:
        assert script.get("/api/search?q=car",
                          headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert script.get("/api/search?q=car", headers={"authorization": "Bearer nope"}).status_code == 401
    script.site.close()


def test_without_a_token_only_loopback_names_are_answered(lib, tmp_path):
    for host, status in (("127.0.0.1:8470", 200), ("localhost:8470", 200), ("[::1]:8470", 200),
                         ("attacker.example:8470", 421), ("127.0.0.1.evil.example", 421)):
        with web_client(lib, tmp_path / "thumbs", host=host) as client:
            assert client.get("/").status_code == status, host
        client.site.close()
    # --no-auth on another address: the person chose an open server
    with web_client(lib, tmp_path / "thumbs", check_host=False, host="nas.local:8470",
                    no_auth=True) as client:
        assert client.get("/").status_code == 200
    client.site.close()


def test_the_readmes_reverse_proxy_recipe(lib, tmp_path):
    # nginx as the README sets it up: Host rewritten to the loopback name, the public
    # name in X-Forwarded-Host, the browser's Origin the public site.
    proxied = {"host": "127.0.0.1:8470", "x-forwarded-host": "photos.example.org",
               "x-forwarded-proto": "https"}
    with web_client(lib, tmp_path / "thumbs") as client:
        sha = lib.sha(lib.car)
        page = client.get(f"/photo/{sha}", headers=proxied)
        assert page.status_code == 200
        csrf = client.cookies.get("labels_csrf")
        form = {"csrf": csrf, "tag": "proxied"}
        sent = client.post(f"/photo/{sha}/tags", data=form, follow_redirects=False,
                           headers={**proxied, "origin": "https://photos.example.org"})
        assert sent.status_code == 303
        forged = client.post(f"/photo/{sha}/tags", data=form,
                             headers={**proxied, "origin": "https://evil.example"})
        assert forged.status_code == 403
        client.post(f"/photo/{sha}/tags/remove", data=form, headers=proxied)  # as it was
    client.site.close()
