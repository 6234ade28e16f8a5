"""The README's install steps, run the way an administrator runs them.

`test_readme_system_service_steps` reads the shell lines of "System service,
step by step" out of README.md and runs them, as root, in a mount namespace of
its own where /etc (a copy), /opt, /usr/local, /var/lib and /srv are empty
folders of the test: useradd and groupadd, the folders and their modes, the
config, the unit installed and `systemd-analyze verify`d with its real
ExecStart path. The few lines this machine cannot run as written have stand-ins
(`STAND_INS`, each with its reason); every other line runs verbatim, so a README
edit that breaks the steps fails here. The service is then started as its unit
says (user, group, umask, environment, ExecStart), labels a photo, and two
people query it: one in the group `labels`, one outside it.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest
import tomllib

import reachable
from imagegen import make_image
from servicekit import START_TIMEOUT_S, wait_for

ROOT = Path(__file__).resolve().parent.parent
SECTION = "### System service, step by step"  # up to the next heading below it
ADMIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # sudo's secure_path
# The people of the test, by names no machine has: `useradd bob` fails where a bob exists.
# They live only in the namespace's copy of /etc, which goes with the test.
_RUN = secrets.token_hex(3)
MEMBER, OUTSIDER = f"ana-{_RUN}", f"bob-{_RUN}"
# What the README's steps create. A machine that runs labelsd already has them; they are
# forgotten in the namespace's copy of /etc, so the steps create them as on a new machine.
README_ACCOUNTS = ("labelsd", "labels")
ACCOUNT_FILES = ("passwd", "group", "shadow", "gshadow", "subuid", "subgid")
# `sudo` for a root shell: `sudo -u USER CMD` runs CMD as USER with USER's groups.
SUDO = ('sudo() { if [ "$1" = -u ]; then u=$2; shift 2; setpriv --reuid "$u" '
        '--regid "$(id -g "$u")" --init-groups -- "$@"; else "$@"; fi; }; ')

# README lines (by their start) that this machine cannot run as written, and why.
STAND_INS = {
    "sudo apt-get install": "packages: checked by needs_root_tools; no network",
    "sudo git clone <this repository> /opt/labelsd/src": "clone: a copy of this working tree",
    "sudo /opt/labelsd/bin/pip install /opt/labelsd/src": "pip: offline, see install_offline",
    "sudoedit /etc/labels/config.toml": "edit: the README's offline weights = line added",
    "sudo -u labelsd env HOME=/var/lib/labelsd KERAS_HOME=": "fetch: the test's weights file",
    "sudo systemctl daemon-reload": "no systemd here",
    "sudo systemctl enable --now labelsd": "no systemd: started as the unit says",
    "journalctl -u labelsd": "no journal: the service's output is read",
    "systemctl status labelsd": "no systemd",
    "labels status": "run as a member of the group",
    "labels search cat": "run as a member and as someone outside the group",
}


def readme_lines() -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    section = text[start:text.index("\n#", start + len(SECTION))]
    blocks = re.findall(r"^ *```sh\n(.*?)^ *```", section, re.M | re.S)
    lines = [line.strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def stand_in(line: str) -> str | None:
    return next((key for key in STAND_INS if line.startswith(key)), None)


def forget_accounts(etc: Path, names: tuple[str, ...]) -> None:
    """Remove the users and groups `names` from a copy of /etc (its account files)."""
    for file in ACCOUNT_FILES:
        path = etc / file
        if not path.is_file():
            continue
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(line for line in lines if line.split(":", 1)[0] not in names))


class Namespace:
    """A mount namespace (held open by a `sleep`) whose system folders are the test's."""

    FOLDERS = ("opt", "usr/local", "var/lib", "srv")

    def __init__(self, root: Path):
        self.root = root
        shutil.copytree("/etc", root / "etc", symlinks=True)
        forget_accounts(root / "etc", README_ACCOUNTS)
        for name in self.FOLDERS:
            (root / name).mkdir(parents=True)
        for name in ("bin", "sbin", "lib", "share", "src"):  # as Debian's base-files has it
            (root / "usr/local" / name).mkdir()
        self.holder = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                        "sleep", "3600"])
        try:
            mine = os.readlink("/proc/self/ns/mnt")
            wait_for(lambda: os.readlink(f"/proc/{self.holder.pid}/ns/mnt") != mine, 10,
                     "the mount namespace")
            for name in ("etc", *self.FOLDERS):
                self.run(["mount", "--bind", str(root / name), f"/{name}"], check=True)
            # The service and the people run this venv's packages (install_offline): in a
            # checkout under a folder only root may enter, they reach them here.
            opening = reachable.opening_argv()
            if opening is not None:
                self.run(opening, check=True)
        except BaseException:
            self.close()
            raise

    def path(self, inside: str) -> Path:
        """Where a path of the namespace lives on this side."""
        return self.root / inside.lstrip("/")

    def argv(self, argv: list[str], user: str | None = None, groups: bool = True) -> list[str]:
        """`argv` in the namespace, as `user` with the groups /etc/group gives
        them (or, groups=False, none but their own: a session begun before)."""
        enter = ["nsenter", "-t", str(self.holder.pid), "-m", "--"]
        if user:
            enter += ["setpriv", "--reuid", user, "--regid", user,
                      "--init-groups" if groups else "--clear-groups", "--"]
        return enter + argv

    def run(self, argv: list[str], user: str | None = None, check: bool = False,
            env: dict[str, str] | None = None, cwd: str = "/",
            groups: bool = True) -> subprocess.CompletedProcess:
        run_env = {"PATH": ADMIN_PATH, "LANG": "C.UTF-8", "HOME": "/root", **(env or {})}
        done = subprocess.run(self.argv(["env", "-C", cwd, *argv], user, groups),
                              capture_output=True, text=True, env=run_env, timeout=300)
        if check:
            assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
        return done

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait(10)


def install_offline(ns: Namespace) -> None:
    """What `pip install /opt/labelsd/src` leaves in the venv, without a network:
    the packages copied from the clone, the dependencies from this test's venv
    (a .pth line), and the console scripts of pyproject.toml."""
    venv = ns.path("/opt/labelsd")
    src = venv / "src"
    site = next(venv.glob("lib/python3*/site-packages"))
    for package in ("daemon/labelsd", "cli/labels_cli"):
        shutil.copytree(src / package, site / Path(package).name)
    (site / "labelsd-test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    scripts = tomllib.loads((src / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, func = target.split(":")
        script = venv / "bin" / name
        script.write_text(f"#!/opt/labelsd/bin/python3\nimport sys\nfrom {module} import {func}\n"
                          f"sys.exit({func}())\n")
        script.chmod(0o755)


def unit_settings(unit: Path) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for key, _, value in (line.partition("=") for line in unit.read_text().splitlines()
                          if "=" in line and not line.lstrip().startswith(("#", ";"))):
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def start_as_unit(ns: Namespace, log: Path) -> subprocess.Popen:
    """labelsd as systemd would start it from the installed unit: its state folder
    made as StateDirectory= says, then ExecStart as User:Group with UMask and
    Environment, and no other environment."""
    unit = unit_settings(ns.path("/etc/systemd/system/labelsd.service"))
    user, group = unit["User"][0], unit["Group"][0]
    state = f"/var/lib/{unit['StateDirectory'][0]}"
    ns.run(["chown", "-R", f"{user}:{group}", state], check=True)
    ns.run(["chmod", unit["StateDirectoryMode"][0], state], check=True)
    env = ["PATH=/usr/local/bin:/usr/bin:/bin", "CUDA_VISIBLE_DEVICES="]
    for value in unit.get("Environment", []):
        env += value.split()
    shell = f"umask {unit['UMask'][0]} && cd {unit['WorkingDirectory'][0]} && exec {unit['ExecStart'][0]}"
    argv = ns.argv(["setpriv", "--reuid", user, "--regid", group, "--init-groups", "--",
                    "env", "-i", *env, "sh", "-c", shell])
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def needs_root_tools():
    if os.geteuid() != 0:
        pytest.skip("the install steps need root (useradd, chown, mount namespaces)")
    for tool in ("unshare", "nsenter", "setpriv", "useradd", "groupadd", "usermod",
                 "systemd-analyze"):
        if shutil.which(tool, path=ADMIN_PATH) is None:
            pytest.skip(f"{tool} is not installed")
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not Path(f"/usr/bin/python{version}").exists():
        pytest.skip(f"the README's `python3 -m venv` needs /usr/bin/python{version} here")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no mount namespaces here: {probe.stderr.decode().strip()}")


@pytest.fixture
def namespace():
    needs_root_tools()
    root = Path(tempfile.mkdtemp(prefix="labelsd-readme-"))
    root.chmod(0o755)  # the people of the test must reach their files below it
    ns = None
    try:
        ns = Namespace(root)
        yield ns
    finally:
        if ns is not None:
            ns.close()
        shutil.rmtree(root, ignore_errors=True)


def _person(ns: Namespace, name: str, *args: str, groups: bool = True) -> subprocess.CompletedProcess:
    return ns.run(["labels", *args], user=name, env={"HOME": f"/home/{name}", "USER": name},
                  groups=groups)


def follow_readme(ns: Namespace, weights: Path) -> tuple[list[str], list[str]]:
    """Run the README's lines in order; returns (ran verbatim, left to the caller)."""
    cwd, ran, later = "/", [], []
    for line in readme_lines():
        key = stand_in(line)
        if line.startswith("cd "):
            cwd = line[3:].strip()
            ran.append(line)
        elif key is None:
            done = ns.run(["bash", "-c", SUDO + line], cwd=cwd, env={"USER": MEMBER})
            assert done.returncode == 0, f"README line failed: {line}\n{done.stdout}{done.stderr}"
            if " verify " in line:  # systemd-analyze: warnings are failures too
                assert done.stdout + done.stderr == "", done.stdout + done.stderr
            ran.append(line)
        elif key.startswith("sudo apt-get"):
            continue  # python3 and its venv are checked by needs_root_tools, run by the next lines
        elif key.startswith("sudo git clone"):
            shutil.copytree(ROOT, ns.path("/opt/labelsd/src"), symlinks=True, ignore=shutil.ignore_patterns(
                ".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", "build"))
        elif key.startswith("sudo /opt/labelsd/bin/pip"):
            install_offline(ns)
        elif key.startswith("sudoedit"):
            with ns.path("/etc/labels/config.toml").open("a") as config:
                config.write('weights = "/var/lib/labelsd/keras/models/test-weights.h5"\n')
        elif key.startswith("sudo -u labelsd"):
            ns.run(["install", "-D", "-o", "labelsd", "-g", "labels", "-m", "0640", str(weights),
                    "/var/lib/labelsd/keras/models/test-weights.h5"], check=True)
        else:
            later.append(line)
    return ran, later


def test_readme_system_service_steps(namespace, biased_weights_file):
    ns = namespace
    for name in (MEMBER, OUTSIDER):
        ns.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True)
    ran, later = follow_readme(ns, biased_weights_file)
    for wanted in ("sudo groupadd --system labels", "sudo useradd --system --gid labels",
                   "sudo install -d -o labelsd -g labels -m 2770 /var/lib/labelsd",
                   "sudo systemd-analyze verify /etc/systemd/system/labelsd.service"):
        assert any(line.startswith(wanted) for line in ran), f"the README no longer says {wanted!r}"
    assert later == ["sudo systemctl daemon-reload", "sudo systemctl enable --now labelsd",
                     "journalctl -u labelsd -f", "systemctl status labelsd", "labels status",
                     "labels search cat"]

    inbox = ns.path("/srv/photos/inbox")  # the shipped config's folder
    inbox.mkdir(parents=True)
    log = ns.root / "labelsd.log"
    service = start_as_unit(ns, log)
    try:
        wait_for(lambda: "labelsd: ready:" in log.read_text(errors="replace"), START_TIMEOUT_S,
                 "labelsd ready", on_timeout=lambda: log.read_text(errors="replace")[-3000:])
        photo = make_image(ns.root / "cat.jpg", size=(320, 240), seed=3)
        os.replace(photo, inbox / "cat.jpg")  # moved in: complete
        path = "/srv/photos/inbox/cat.jpg"

        def labelled():
            shown = _person(ns, MEMBER, "show", path, "--json")
            return shown.returncode == 0 and json.loads(shown.stdout)["status"] == "done"
        wait_for(labelled, 120, "the photo labelled",
                 on_timeout=lambda: log.read_text(errors="replace")[-3000:])

        # step 6, as a member of `labels`: status, search, and a tag
        status = _person(ns, MEMBER, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.splitlines()[-1].startswith("running: "), status.stdout
        found = _person(ns, MEMBER, "search", "cat", "--paths")
        assert found.returncode == 0 and found.stdout.split() == [path], found.stdout + found.stderr
        tagged = _person(ns, MEMBER, "tag", path, "shared")
        assert tagged.returncode == 0, tagged.stderr
        assert json.loads(_person(ns, MEMBER, "show", path, "--json").stdout)["tags"] == ["shared"]

        # and as someone outside it: one line saying which group to join
        refused = _person(ns, OUTSIDER, "search", "cat")
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
        assert f"sudo usermod -aG labels {OUTSIDER}" in refused.stderr, refused.stderr
        # added to the group, but in a session begun before: told to log in again
        ns.run(["usermod", "-aG", "labels", OUTSIDER], check=True)
        late = _person(ns, OUTSIDER, "search", "cat", groups=False)
        assert late.returncode == 1 and "log in again (or start a shell with `newgrp labels`)" in (
            late.stderr), late.stderr

        service.send_signal(signal.SIGTERM)
        assert service.wait(60) == 0, log.read_text(errors="replace")[-3000:]
    finally:
        if service.poll() is None:
            service.kill()
            service.wait(10)

    state = ns.path("/var/lib/labelsd")
    groups = {line.split(":")[0]: int(line.split(":")[2])
              for line in ns.path("/etc/group").read_text().splitlines()}
    assert stat.S_IMODE(state.stat().st_mode) == 0o2770 and state.stat().st_gid == groups["labels"]
    db = state / "labels.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o660 and db.stat().st_gid == groups["labels"]
    # What decides the labels (keras' settings, the converted model and its record, the
    # remembered checksums) is the service's alone under UMask 0007 too (issue 32)
    made = [p for top in (state / "keras", state / ".cache") if top.exists() for p in [top, *top.rglob("*")]]
    assert state / "keras" / "keras.json" in made, made
    assert not [p for p in made if p.lstat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)], {
        str(p): oct(p.lstat().st_mode) for p in made}


def test_the_readme_accounts_are_forgotten_in_the_copy_of_etc(tmp_path):
    """A machine that runs labelsd already has its user and group: the namespace's
    copy of /etc forgets them, so the README's useradd and groupadd run as on a new one."""
    (tmp_path / "passwd").write_text("root:x:0:0::/root:/bin/sh\nlabelsd:x:998:998::/var/lib/labelsd:/bin/false\n"
                                     "labelsdx:x:5:5::/:/bin/sh\n")
    (tmp_path / "group").write_text("root:x:0:\nlabels:x:998:ana\n")
    forget_accounts(tmp_path, README_ACCOUNTS)
    assert (tmp_path / "passwd").read_text() == "root:x:0:0::/root:/bin/sh\nlabelsdx:x:5:5::/:/bin/sh\n"
    assert (tmp_path / "group").read_text() == "root:x:0:\n"
