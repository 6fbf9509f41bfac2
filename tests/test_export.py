"""ONNX export: a valid graph with paper-named scopes and complete metadata, and parity with the torch model."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from ram_infer import load_model  # noqa: E402
from ram_infer.metadata import KEYS, PREFIX  # noqa: E402
from ram_infer.training.cli import main  # noqa: E402
from ram_infer.training.config import ModelConfig, TrainConfig  # noqa: E402
from ram_infer.training.export import ParityError, check_parity, export_checkpoint, export_step_model  # noqa: E402
from ram_infer.training.model import RecurrentAttention  # noqa: E402

PARITY_ATOL = 1e-5


def test_exported_graph_passes_the_full_checker(tiny_model_path):
    onnx.checker.check_model(onnx.load(str(tiny_model_path)), full_check=True)


def test_exported_graph_passes_strict_shape_inference(tiny_model_path):
    onnx.shape_inference.infer_shapes(onnx.load(str(tiny_model_path)), check_type=True, strict_mode=True)


def test_exported_metadata_has_every_key(tiny_model_path):
    keys = {p.key for p in onnx.load(str(tiny_model_path)).metadata_props}
    assert keys >= {PREFIX + key for key in KEYS}


def test_exported_io_follows_the_contract(tiny_model_path):
    graph = onnx.load(str(tiny_model_path)).graph
    shapes = {
        v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        for v in list(graph.input) + list(graph.output)
    }
    state = 32 if "rnn" in tiny_model_path.name else 64
    assert shapes == {
        "glimpse": ["batch", 2, 1, 4, 4],
        "location": ["batch", 2],
        "state": ["batch", state],
        "state_next": ["batch", state],
        "location_next": ["batch", 2],
        "logits": ["batch", 10],
    }


@pytest.mark.parametrize("scope", ["/glimpse_net/", "/core_net/", "/location_net/", "/action_net/"])
def test_node_scopes_carry_paper_names(tiny_model_path, scope):
    assert any(node.name.startswith(scope) for node in onnx.load(str(tiny_model_path)).graph.node)


def test_baseline_is_not_exported(tiny_model_path):
    assert not any("baseline" in node.name for node in onnx.load(str(tiny_model_path)).graph.node)


def test_paper_size_model_is_about_one_megabyte(tmp_path):
    path = tmp_path / "paper.onnx"
    export_step_model(RecurrentAttention(ModelConfig()), path, dataset="mnist")
    assert 0.5e6 < path.stat().st_size < 1.5e6


@pytest.fixture(scope="module")
def episodes(tiny_model, images):
    """Whole mean-policy episodes through torch (model.rollout) and through the runtime (Engine.predict)."""
    with torch.no_grad():
        rollout = tiny_model.model.rollout(torch.from_numpy(images))
    return rollout, load_model(tiny_model.path, threads=1).predict(images)


def test_engine_locations_match_torch_rollout(episodes):
    rollout, prediction = episodes
    np.testing.assert_allclose(prediction.locations, rollout.locations.numpy(), rtol=0, atol=PARITY_ATOL)


def test_engine_final_logits_match_torch_rollout(episodes):
    rollout, prediction = episodes
    np.testing.assert_allclose(prediction.logits, rollout.logits[-1].numpy(), rtol=0, atol=PARITY_ATOL)


def test_engine_episodes_are_not_trivial(episodes):
    """Guards the two tests above: the paths move and the answers differ between images."""
    _, prediction = episodes
    assert np.ptp(prediction.locations[:, -1], axis=0).min() > 0.01
    assert len(np.unique(prediction.labels)) > 1


def test_check_parity_passes_on_the_exported_model(tiny_model, images):
    diffs = check_parity(tiny_model.model, tiny_model.path, images)
    assert max(diffs.values()) <= PARITY_ATOL


def test_check_parity_lists_every_output_when_the_file_differs(tiny_model, images, tmp_path):
    changed = RecurrentAttention(tiny_model.model.config).eval()
    changed.load_state_dict(tiny_model.model.state_dict())
    with torch.no_grad():
        changed.action_net.classify.bias.add_(0.1)
    expected = r"(?s)step logits: max scaled diff 0\.\d+ > 1e-05.*all outputs:.*step state_next"
    with pytest.raises(ParityError, match=expected):
        check_parity(changed, tiny_model.path, images)


def test_export_checkpoint_rebuilds_the_model(tmp_path, images):
    config = TrainConfig(task="mnist", model=ModelConfig(glimpse_size=4, num_glimpses=3, core_hidden=16))
    model = RecurrentAttention(config.model).eval()
    checkpoint = tmp_path / "last.pt"
    torch.save({"config": config.to_dict(), "model": model.state_dict(), "step": 7}, checkpoint)
    info = export_checkpoint(checkpoint, tmp_path / "m.onnx", test_error=0.25)
    assert (info.dataset, info.test_error, info.training["steps"]) == ("mnist", 0.25, 7)
    check_parity(model, tmp_path / "m.onnx", images)


def test_export_command_writes_the_model(tmp_path, capsys):
    config = TrainConfig(model=ModelConfig(glimpse_size=4, num_glimpses=2, core_hidden=8))
    torch.save({"config": config.to_dict(), "model": RecurrentAttention(config.model).state_dict()}, tmp_path / "c.pt")
    status = main(["export", str(tmp_path / "c.pt"), str(tmp_path / "m.onnx"), "--test-error", "0.5"])
    record = json.loads(capsys.readouterr().out)
    assert (status, record["ram.test_error"], load_model(tmp_path / "m.onnx").info.test_error) == (0, "0.5", 0.5)


def test_export_checkpoint_without_config_raises(tmp_path):
    checkpoint = tmp_path / "bad.pt"
    torch.save({"model": {}}, checkpoint)
    with pytest.raises(ValueError, match=r"bad\.pt: not a ram-train checkpoint, it lacks the keys \[.config.\]"):
        export_checkpoint(checkpoint, tmp_path / "m.onnx")


def test_translated_model_gets_canvas_placement(tmp_path):
    config = ModelConfig(height=60, width=60, glimpse_size=4, num_glimpses=2, core_hidden=16)
    info = export_step_model(RecurrentAttention(config), tmp_path / "t.onnx", dataset="translated60")
    assert (info.input.placement, load_model(tmp_path / "t.onnx").info.input.height) == ("canvas", 60)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"labels": ["a", "b"]}, r"labels must have one name per class \(10\), got 2"),
        ({"test_error": 12.5}, r"test_error must be in \[0, 1\] or None, got 12.5"),
    ],
)
def test_bad_metadata_arguments_raise(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        export_step_model(RecurrentAttention(ModelConfig()), tmp_path / "m.onnx", dataset="mnist", **options)


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path):
    """torch.load(weights_only=False) runs whatever a pickle says; checkpoints are read with weights_only=True."""
    import pickle

    from ram_infer.training.export import read_checkpoint

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"config": Payload()}, protocol=2))
    with pytest.raises(ValueError, match=r"evil\.pt: not a ram-train checkpoint \(it holds more than tensors"):
        read_checkpoint(evil)
    assert not marker.exists()
