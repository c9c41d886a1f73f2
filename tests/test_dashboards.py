"""Every TensorBoard dashboard serves a short run's data, asked through the real server's HTTP API."""

from __future__ import annotations

import gzip
import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import tensorboard_server, tiny_config

from mlp_core.training.loop import train_and_evaluate

pytestmark = pytest.mark.slow  # the quick tier (-m "not slow") leaves this file out

PLUGINS = {
    "scalars",
    "histograms",
    "distributions",
    "images",
    "text",
    "hparams",
    "graphs",
    "profile",
    "projector",
    "pr_curves",
    "custom_scalars",
}
LAYERS, HIDDEN = ["dense_0", "dense_1", "logits"], ["hidden_0", "hidden_1"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A 2-epoch run (8 steps each, calls of 2, steps 3..6 profiled) and a server over its logdir."""
    config = tiny_config(
        tmp_path_factory.mktemp("dash"),
        train_subset=512,
        log_every=4,
        steps_per_call=2,
        profile_steps="3:6",
        val_size=500,
    )
    run = Path(train_and_evaluate(config)["run_dir"])
    with tensorboard_server(run.parent) as base:
        wait_until_active(base)
        yield base, run.name


def fetch(url: str, data: bytes | None = None) -> bytes:
    request = urllib.request.Request(
        url, data, {"Content-Type": "application/json"} if data else {}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()  # the profile plugin compresses whatever the client accepts
        return gzip.decompress(body) if response.headers.get("Content-Encoding") == "gzip" else body


def get(base: str, route: str, **params) -> object:
    return json.loads(fetch(f"{base}/plugin/{route}?{urllib.parse.urlencode(params)}"))


def wait_until_active(base: str, seconds: float = 90) -> None:
    """The projector and some loaders find their data in background threads: poll the listing."""
    deadline, active = time.monotonic() + seconds, set()
    while time.monotonic() < deadline:
        try:
            listing = json.loads(fetch(f"{base}/plugins_listing"))
            active = {name for name, entry in listing.items() if entry.get("enabled")}
            if PLUGINS <= active and get(base, "pr_curves/tags") and get(base, "projector/runs"):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"plugins not active after {seconds} s: {sorted(PLUGINS - active)}")


def test_scalars_histograms_distributions_images_text_and_hparams(server):
    base, run = server
    assert "loss" in get(base, "scalars/tags")[f"{run}/validation"]
    assert (
        len(
            get(
                base,
                "distributions/distributions",
                run=f"{run}/train",
                tag="weights/mlp/dense_0/kernel",
            )
        )
        == 2
    )  # one per epoch
    assert "confusion_matrix" in get(base, "images/tags")[f"{run}/validation"]
    assert "config" in get(base, "text/tags")[run]
    body = json.dumps({"experimentName": ""}).encode()
    experiment = json.loads(fetch(f"{base}/plugin/hparams/experiment", body))
    assert "hidden" in {h["name"] for h in experiment["hparamInfos"]}


def test_graphs_hold_the_steps_matmuls_and_fused_updates(server):
    base, run = server
    assert {f"{run}/train", f"{run}/validation"} <= set(get(base, "graphs/info"))
    train = fetch(f"{base}/plugin/graphs/graph?run={run}/train").decode()
    assert 'op: "MatMul"' in train and 'op: "ResourceApplyAdam"' in train
    assert 'op: "ReluGrad"' in train  # the tape's backward pass
    evaluate = fetch(f"{base}/plugin/graphs/graph?run={run}/validation").decode()
    assert 'op: "MatMul"' in evaluate and "ResourceApply" not in evaluate


def test_profile_lists_the_run_with_its_tools(server):
    base, run = server
    [session] = [r for r in get(base, "profile/runs") if r.startswith(f"{run}/")]
    tools = get(base, "profile/run_tools", run=session)
    assert {"overview_page", "input_pipeline_analyzer", "framework_op_stats"} <= set(tools)
    assert any(tool.startswith("trace_viewer") for tool in tools)


def test_projector_tensor_metadata_and_sprite(server):
    base, run = server
    assert get(base, "projector/runs") == [f"{run}/test"]
    [embedding] = get(base, "projector/info", run=f"{run}/test")["embeddings"]
    assert embedding["tensorShape"] == [10_000, 32] and embedding["sprite"]["singleImageDim"] == [
        28,
        28,
    ]
    name = embedding["tensorName"]
    tensor = fetch(f"{base}/plugin/projector/tensor?run={run}/test&name={urllib.parse.quote(name)}")
    assert np.frombuffer(tensor, np.float32).size == 10_000 * 32
    rows = fetch(f"{base}/plugin/projector/metadata?run={run}/test&name={urllib.parse.quote(name)}")
    rows = rows.decode().splitlines()
    assert rows[0] == "label\tpredicted\tcorrect" and len(rows) == 10_001
    correct = sum(row.endswith("yes") for row in rows[1:])
    assert all(
        row.split("\t")[2] == ("yes" if row.split("\t")[0] == row.split("\t")[1] else "no")
        for row in rows[1:]
    )
    assert 0.5 < correct / 10_000  # the tiny run's test accuracy


def test_pr_curves_one_series_per_digit_each_epoch(server):
    base, run = server
    tags = get(base, "pr_curves/tags")[f"{run}/validation"]
    assert set(tags) == {f"digit_{d}/pr_curves" for d in range(10)}
    curve = get(base, "pr_curves/pr_curves", run=f"{run}/validation", tag="digit_3/pr_curves")
    entries = curve[f"{run}/validation"]
    assert [e["step"] for e in entries] == [8, 16]
    assert max(entries[-1]["precision"]) <= 1 and max(entries[-1]["recall"]) == pytest.approx(1)


def test_custom_scalars_group_the_dynamics_with_a_line_per_layer(server):
    base, run = server
    charts = {
        chart["title"]: chart["multiline"]["tag"][0]
        for category in get(base, "custom_scalars/layout")["category"]
        for chart in category["chart"]
    }
    assert len(charts) == 8
    for title, regex in charts.items():
        lines = get(base, "custom_scalars/scalars", run=f"{run}/train", tag=regex)["tag_to_events"]
        if "per layer" in title:
            assert set(lines) == {regex.strip("^") + name for name in LAYERS}
            assert all([e[1] for e in events] == [4, 8, 12, 16] for events in lines.values())
        elif "per hidden layer" in title:
            assert set(lines) == {regex.strip("^") + name for name in HIDDEN}
        else:
            assert list(lines) == [regex.strip("^$")]
    validation = get(base, "custom_scalars/scalars", run=f"{run}/validation", tag="^loss$")
    assert [e[1] for e in validation["tag_to_events"]["loss"]] == [8, 16]
