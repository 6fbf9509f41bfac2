"""The training loop of ``ram-train train``: resumable checkpoints, validation, weight averaging and torchrun data
parallelism."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from ram_infer.engine import usable_cores

from .augment import augment_batch, torch_generator
from .config import TrainConfig, apply_overrides
from .data import evaluation_split, open_folder, training_stream
from .evaluate import errors_per_glimpse
from .export import read_checkpoint
from .folder import FolderData
from .losses import hybrid_loss
from .model import RecurrentAttention
from .plan import plan_run
from .presets import PRESETS, load_preset
from .run_files import BEST, CHECKPOINT, CONFIG, LOG

# Settings that may change when a run resumes; the others define the run and come from the checkpoint.
RESUMABLE_OVERRIDES = {"steps", "eval_every", "checkpoint_every", "log_every", "threads", "data_root", "ema_decay"}


def learning_rate_at(config: TrainConfig, step: int) -> float:
    """Cosine decay from learning_rate to learning_rate · lr_decay_to over the run (or over the step's leg)."""
    progress = min(step / max(config.schedule_length(step), 1), 1.0)
    factor = config.lr_decay_to + (1.0 - config.lr_decay_to) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.learning_rate * factor


def mixed_precision(precision: str, device_type: str) -> torch.autocast:
    """The autocast context of TrainConfig.precision: bfloat16 matrix products for "bfloat16", a no-op for "float32"."""
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


class Trainer:
    """One training run: model, optimiser, data stream, checkpoints and log in ``out_dir``."""

    def __init__(self, config: TrainConfig, out_dir: Path, device: torch.device, rank: int = 0, world_size: int = 1,
                 data: FolderData | None = None):
        """``data``: an own data set already opened (task "folder"); None opens the run's."""
        self.config, self.out_dir, self.device = config, out_dir, device
        self.rank, self.world_size = rank, world_size
        torch.manual_seed(config.seed)  # the initial weights
        self.model = RecurrentAttention(config.model, config.reinforce_to_core).to(device)
        self.network = DistributedDataParallel(self.model) if world_size > 1 else self.model
        self.average = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay))
                        if config.ema_decay else None)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
        )
        self.stream = training_stream(config, rank, world_size, data)
        self.step, self.elapsed, self.best_error = 0, 0.0, math.inf
        self._valid: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def kept_model(self) -> RecurrentAttention:
        """The weights validated and kept in best.pt: the moving average once it has begun, else the model's."""
        if self.average is not None and self.average.n_averaged > 0:
            return self.average.module
        return self.model

    def state(self) -> dict[str, Any]:
        state = {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "best_error": self.best_error,
        }
        if self.average is not None:
            state["average"] = self.average.state_dict()
        return state

    def load(self, checkpoint: dict[str, Any]) -> None:
        self.model.load_state_dict(checkpoint["model"])
        if self.average is not None and "average" in checkpoint:  # absent when this resume switched averaging on
            self.average.load_state_dict(checkpoint["average"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.step, self.elapsed, self.best_error = checkpoint["step"], checkpoint["elapsed"], checkpoint["best_error"]

    def save(self, name: str, state: dict[str, Any]) -> None:
        """Writes atomically, so an interruption never leaves a half-written checkpoint."""
        path = self.out_dir / name
        torch.save(state, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)

    def log(self, record: dict[str, Any]) -> None:
        with open(self.out_dir / LOG, "a") as f:
            f.write(json.dumps(record) + "\n")

    def train_step(self) -> dict[str, float]:
        """One optimiser step on the batch and the location noise that belong to self.step."""
        c = self.config
        images, labels = self.stream.batch(self.step)
        x = augment_batch(images, c, self.step, self.rank, self.device)  # (B, C, H, W)
        y = torch.from_numpy(labels).to(self.device)  # (B,)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate_at(c, self.step)
        noise = torch_generator(c.seed, self.step, self.rank, "location", self.device)
        with mixed_precision(c.precision, self.device.type):
            rollout = self.network(x, c.model.location_std, noise)
            terms = hybrid_loss(rollout, y, reinforce_weight=c.reinforce_weight, baseline_weight=c.baseline_weight,
                                aux_weight=c.aux_weight)
        self.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step()
        if self.average is not None and self.step >= c.ema_from:
            self.average.update_parameters(self.model)  # the first update copies the weights
        self.step += 1
        record = {name: value.item() for name, value in terms._asdict().items()}
        record.update(grad_norm=float(grad_norm), lr=learning_rate_at(c, self.step - 1))
        return record

    def validation_error(self) -> float:
        if self._valid is None:
            self._valid = evaluation_split(self.config, "valid", limit=self.config.eval_images)[:2]
        model = self.kept_model
        model.eval()
        error = float(errors_per_glimpse(model, *self._valid, device=self.device)[-1])
        model.train()
        return error

    def run(self, progress: bool = True, stop_at: int | None = None) -> dict[str, Any]:
        """Trains until config.steps (or stop_at), logging, evaluating and checkpointing on the way.

        Returns:
            the last log record.
        """
        c = self.config
        stop = c.steps if stop_at is None else min(stop_at, c.steps)
        bar = None
        if progress and self.is_main:
            bar = tqdm(total=c.steps, initial=self.step, unit="step", dynamic_ncols=True, file=sys.stderr)
        window_start, window_steps, last = time.perf_counter(), 0, {}
        while self.step < stop:
            started = time.perf_counter()
            record = self.train_step()
            self.elapsed += time.perf_counter() - started
            window_steps += 1
            if bar is not None:
                bar.update(1)
            if self.step % c.log_every == 0 or self.step == c.steps:
                seconds = time.perf_counter() - window_start
                images_per_s = window_steps * c.batch_size * self.world_size / max(seconds, 1e-9)
                last = {"step": self.step, "epoch": self.step / self.stream.steps_per_epoch, **record,
                        "images_per_s": images_per_s, "elapsed_s": self.elapsed}
                if self.is_main:
                    self.log(last)
                    if bar is not None:
                        bar.set_postfix(loss=f"{record['total']:.3f}", acc=f"{record['reward']:.3f}",
                                        img_s=f"{images_per_s:.0f}")
                window_start, window_steps = time.perf_counter(), 0
            if self.step % c.eval_every == 0 or self.step == c.steps:
                self.evaluate_and_keep_best(last)
            if self.step % c.checkpoint_every == 0 or self.step in (c.steps, stop):
                self.checkpoint()
        if bar is not None:
            bar.close()
        return last

    def evaluate_and_keep_best(self, last: dict[str, Any]) -> None:
        if not self.is_main:
            return
        started = time.perf_counter()
        error = self.validation_error()
        self.elapsed += time.perf_counter() - started
        if error < self.best_error:
            self.best_error = error
            self.save(BEST, {"config": self.config.to_dict(), "model": self.kept_model.state_dict(),
                             "step": self.step, "valid_error": error})
        self.log({"step": self.step, "valid_error": error, "best_valid_error": self.best_error,
                  "elapsed_s": self.elapsed})
        last["valid_error"] = error

    def checkpoint(self) -> None:
        if self.is_main:
            self.save(CHECKPOINT, self.state())
        if self.world_size > 1:
            dist.barrier()


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: torch sees no CUDA device")
    return torch.device(name)


def build_config(args: argparse.Namespace, checkpoint: dict[str, Any] | None) -> TrainConfig:
    """The run's configuration: the preset with the overrides, or, on resume, the checkpoint's with the few overrides
    a resume may make (RESUMABLE_OVERRIDES), recorded so that a replay from scratch runs the same steps."""
    if checkpoint is None and args.data is not None:
        return plan_run(args.data, args.overrides).config
    if checkpoint is None:
        return apply_overrides(load_preset(args.preset), args.overrides)
    changed = {item.lstrip("-").partition("=")[0] for item in args.overrides}
    if changed - RESUMABLE_OVERRIDES:
        raise ValueError(f"cannot change {', '.join(sorted(changed - RESUMABLE_OVERRIDES))} when resuming; "
                         f"only {', '.join(sorted(RESUMABLE_OVERRIDES))} may change")
    saved = TrainConfig.from_dict(checkpoint["config"])
    config = apply_overrides(saved, args.overrides)
    if config.ema_decay != saved.ema_decay:
        if saved.ema_decay:
            raise ValueError(f"cannot change ema_decay ({saved.ema_decay}) when resuming; it may only be switched on")
        config.ema_from = checkpoint["step"]  # averaging starts here, as a replay from scratch with ema_from will
    config.schedule_legs = saved.legs_after_resume(checkpoint["step"], config.steps)
    return config


def open_own_images(config: TrainConfig, rank: int, world_size: int, *, progress: bool) -> FolderData:
    """The run's own images, decoded (or found cached) before RUN is made, so that bad data leaves no half-made run.
    The first process builds a stale cache while the others wait, then they open it: data-parallel ranks never build
    the same cache at once."""
    data = open_folder(config, workers=usable_cores(), progress=progress) if rank == 0 else None
    if world_size > 1:
        dist.barrier()
    if data is None:
        data = open_folder(config)
    else:
        print(f"ram-train: {describe_data(data)}", file=sys.stderr)
    return data


def describe_data(data: FolderData) -> str:
    """One line on what is trained on: the splits' sizes, the classes, and what was skipped."""
    counts = {split: sum(values) for split, values in data.counts().items()}
    line = (f"{counts['train']} training, {counts['valid']} validation and {counts['test']} test images of "
            f"{len(data.listing.classes)} classes")
    skipped = [f"{len(data.failed)} files that cannot be decoded (first: {next(iter(data.failed))}: "
               f"{next(iter(data.failed.values()))})"] if data.failed else []
    if data.listing.missing:
        skipped.append(f"{len(data.listing.missing)} rows whose file is missing (first: {data.listing.missing[0]})")
    return line + ("; skipped " + " and ".join(skipped) if skipped else "")


def truncate_log(path: Path, step: int) -> None:
    """Drops log records written after the checkpoint being resumed, so the log reads as one uninterrupted run."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in kept))


def command_train(args: argparse.Namespace) -> int:
    """``ram-train train``: starts a run in ``--out`` (or resumes it), prints the final record as one JSON line."""
    out_dir = Path(args.out)
    checkpoint_path = out_dir / CHECKPOINT
    checkpoint = None
    if checkpoint_path.exists():
        if not args.resume:
            raise ValueError(f"{checkpoint_path} exists: pass --resume to continue that run, or choose another --out")
        checkpoint = read_checkpoint(checkpoint_path)
    elif args.resume and args.preset is None and args.data is None:
        raise ValueError(f"{checkpoint_path}: no checkpoint to resume from, and no --preset or --data to start one")
    if checkpoint is None and args.preset is None and args.data is None:
        raise ValueError("choose a --preset (" + ", ".join(PRESETS) + ") or your own images with --data DIR")
    if args.preset is not None and args.data is not None:
        raise ValueError("choose either --preset or --data, not both")
    config = build_config(args, checkpoint)
    if config.threads:
        torch.set_num_threads(config.threads)
    rank, world_size = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = pick_device(args.device)
    if world_size > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    data = open_own_images(config, rank, world_size, progress=not args.no_progress) if config.task == "folder" else None
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(config, out_dir, device, rank, world_size, data)
    if checkpoint is not None:
        trainer.load(checkpoint)
        if trainer.is_main:
            truncate_log(out_dir / LOG, trainer.step)
    elif trainer.is_main:
        (out_dir / LOG).write_text("")
    if trainer.is_main:  # the run as it now stands (a resume may lengthen it)
        (out_dir / CONFIG).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    try:
        last = trainer.run(progress=not args.no_progress, stop_at=args.stop_at)
    finally:
        if world_size > 1:
            dist.destroy_process_group()
    if trainer.is_main:
        print(json.dumps({"step": trainer.step, "best_valid_error": trainer.best_error,
                          "elapsed_s": round(trainer.elapsed, 1), "last": last}))
    return 0
