"""`labels status --json` names the runtime and precision each service runs (parsed
from the device string the service registers, `runtime.describe`), and `labels model
info --json` does too, as fields of their own."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from labels_cli.app import app
from labelsd.model.runtime import describe
from labelsd.serve.status import runtime_of
from labelsd.store import nodes


def _classifier(device, kind, precision):
    runtime = SimpleNamespace(kind=kind) if kind else SimpleNamespace()
    return SimpleNamespace(device=device, runtime=runtime, precision=precision)


@pytest.mark.parametrize("device, kind, precision, want", [
    ("cpu", "litert", "int8", ("litert", "int8")),
    ("cpu", "litert", "float32", ("litert", "fp32")),
    ("cpu", None, "mixed_bfloat16", ("tensorflow", "bf16")),
    ("gpu:0 NVIDIA H200", None, "mixed_float16", ("tensorflow", "fp16")),
    ("gpu:0 NVIDIA GeForce RTX 3060, Laptop GPU", None, "float32", ("tensorflow", "fp32")),
])
def test_runtime_and_precision_read_back_from_what_the_service_registers(device, kind, precision, want):
    assert runtime_of(describe(_classifier(device, kind, precision))) == want


@pytest.mark.parametrize("device", ["", "cpu", "GPU:0", None, "gpu:0 Some, Odd Name"])
def test_a_node_from_before_says_no_runtime(device):
    assert runtime_of(device) == ("", "")


def test_status_json_has_runtime_and_precision(tmp_path):
    from labelsd.store.engine import open_store

    db = tmp_path / "labels.db"
    with open_store(str(db)) as store:
        result = CliRunner().invoke(app, ["--db", str(db), "status", "--json"])
        status = json.loads(result.stdout)
        assert (status["runtime"], status["precision"]) == ("", "")  # no service yet
        nodes.register(store, "box:4242", model="inception_v3", device="cpu, litert int8",
                       watching=[str(tmp_path)])
        nodes.heartbeat(store, "box:4242", done=0, failed=0)
        result = CliRunner().invoke(app, ["--db", str(db), "status", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert (status["device"], status["runtime"], status["precision"]) == ("cpu, litert int8", "litert", "int8")
    (node,) = status["nodes"]
    assert (node["device"], node["runtime"], node["precision"]) == ("cpu, litert int8", "litert", "int8")
