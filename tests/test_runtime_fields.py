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


def test_status_says_what_auto_chose_and_why(tmp_path):
    """A service whose `auto` chose by measuring registers that measurement after its device;
    `labels status` shows the device as before and the choice beside it (`auto`)."""
    from labelsd.model import precision as prec
    from labelsd.model.runtime import registered_device
    from labelsd.store.engine import open_store

    m = prec.Measurement(25, 2, {"fp32": prec.Measured("litert", 39.0, 25, 3, 25),
                                 "int8": prec.Measured("litert", 119.3, 25, 2, 23),
                                 "bf16": prec.Measured("tensorflow", 48.8, 24, 3, 24)}, 6.5)
    clf = _classifier("cpu", "litert", "int8")
    clf.precision_choice = prec.auto_choice(m)
    assert registered_device(_classifier("cpu", "litert", "int8")) == "cpu, litert int8"  # asked for
    db = tmp_path / "labels.db"
    with open_store(str(db)) as store:
        nodes.register(store, "box:4242", model="inception_v3", device=registered_device(clf),
                       watching=[str(tmp_path)])
        nodes.heartbeat(store, "box:4242", done=0, failed=0)
        result = CliRunner().invoke(app, ["--db", str(db), "status", "--json"])
        text = CliRunner().invoke(app, ["--db", str(db), "status"]).stdout
    status = json.loads(result.stdout)
    assert (status["device"], status["runtime"], status["precision"]) == ("cpu, litert int8", "litert", "int8")
    auto = status["auto"]
    assert auto == status["nodes"][0]["auto"]
    assert (auto["chosen"], auto["photos"], auto["judged"], auto["measure_s"]) == ("int8", 25, True, 6.5)
    assert auto["measured"]["int8"] == {"runtime": "litert", "forward_ips": 119.3, "top1": 25, "top1_exact": 23,
                                        "top3_min": 2, "faithful": True}
    assert auto["measured"]["bf16"]["faithful"] is False
    assert auto["why"] == clf.precision_choice.reason and "int8 119.3 img/s" in auto["why"]
    assert f"precision int8: {auto['why']}" in text
    assert "on cpu, litert int8 " in text  # the device as before, the measurement on its own line
