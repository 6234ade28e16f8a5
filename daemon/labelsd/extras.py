"""How to add an optional part of labelsd (an extra of pyproject.toml) to the
installation that runs: the command a hint prints.

labelsd is not on a package index: it is installed from its checkout (`make run`'s
.venv, `make install`, `pip install /opt/labelsd/src`, `pipx install .`), so asking
pip for the extra by the project's name would fail. pip records where an installation
came from (direct_url.json, PEP 610); the hint installs the extra from that same
folder with the interpreter that runs now, so it works whichever way labelsd was
installed. Without that record: `make install EXTRAS=...` in the checkout.
"""

from __future__ import annotations

import json
import shlex
import sys
from urllib.parse import unquote, urlparse

# The extras of pyproject.toml, for the hints and `make install EXTRAS=` (a test keeps them in step).
EXTRAS = {
    "gpu": "TensorFlow with CUDA (an NVIDIA GPU)",
    "postgres": "the PostgreSQL driver (psycopg 3)",
    "metrics": "Prometheus metrics (labelsd --metrics HOST:PORT)",
    "litert": "the LiteRT runtime (installed by default)",
    "lite": "EfficientNet-Lite0's ImageNet weights (installed by default)",
}


def installed_from() -> tuple[str, bool] | None:
    """(the folder labelsd was installed from, whether editably), or None."""
    from importlib.metadata import distributions

    for dist in distributions(name="labelsd"):
        try:
            record = json.loads(dist.read_text("direct_url.json") or "null")
        except (OSError, ValueError):
            continue
        if not isinstance(record, dict) or "dir_info" not in record:
            continue
        url = urlparse(str(record.get("url", "")))
        if url.scheme == "file" and url.path:
            return unquote(url.path), bool(record["dir_info"].get("editable"))
    return None


def install_command(extra: str) -> str:
    """The command that adds `extra` to the labelsd this interpreter runs."""
    source = installed_from()
    if source is None:
        return f"make install EXTRAS={extra} (in the labelsd checkout)"
    folder, editable = source
    return (f"{shlex.quote(sys.executable)} -m pip install {'-e ' if editable else ''}"
            + shlex.quote(f"{folder}[{extra}]"))


__all__ = ["EXTRAS", "install_command", "installed_from"]
