"""Embedder training: MultipleNegativesRankingLoss over (query, positive, hard negative) triples,
in bounded steps with durable checkpoints, so a run stopped anywhere resumes where it saved."""

from __future__ import annotations

import io
import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from appliance.files import fsync_tree, write_atomically
from appliance.tune.pairs import TrainingPair

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_fraction: float = 0.1
    checkpoint_every: int = 50  # steps
    budget_seconds: float | None = None  # training time, summed over resumed runs
    threads: int = 1  # torch CPU threads of the training thread (serving keeps its own)
    max_seq_length: int = 256
    seed: int = 0
    device: str = "cpu"


@dataclass(frozen=True, slots=True)
class TrainOutcome:
    finished: bool  # False: stopped early by `keep_going`; the checkpoint holds where it was
    steps: int
    seconds: float  # training time over every run of this work dir
    resumed_from: int  # the step this run started at (0: from the base model)
    last_loss: float | None
    reason: str  # max_steps | budget | stopped


Progress = Callable[[int, int, float | None], bool]  # (step, total, loss) -> keep going?


def _batches(count: int, batch_size: int, seed: int, step: int) -> list[int]:
    """The pair indexes of batch `step`: epochs are seeded shuffles, so a resumed run draws the
    same batches it would have drawn without the stop."""
    per_epoch = max(1, count // batch_size)
    epoch, within = divmod(step, per_epoch)
    order = list(range(count))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order[within * batch_size : (within + 1) * batch_size]


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(path, buffer.getvalue())


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        # Written atomically, so a damaged file is a disk fault: start again rather than fail forever.
        log.exception("tuning checkpoint unreadable; training starts again from the base model")
        return None


def train_embedder(
    base_dir: Path,
    pairs: Sequence[TrainingPair],
    texts: Sequence[str],
    work_dir: Path,
    config: TrainConfig,
    keep_going: Progress | None = None,
) -> TrainOutcome:
    """Train a copy of the sentence-transformers model at `base_dir` on `pairs` (negatives index
    `texts`); the result goes to `work_dir/model`. Checkpoints to `work_dir/checkpoint.pt` every
    `config.checkpoint_every` steps and whenever `keep_going` says stop; a later call with the same
    work dir resumes from it."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    if not pairs:
        raise ValueError("no training pairs")
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "config.json").write_text(json.dumps(asdict(config), indent=2))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)  # per thread under OpenMP: serving threads keep theirs
    try:
        torch.manual_seed(config.seed)
        model = SentenceTransformer(str(base_dir), device=config.device, local_files_only=True)
        model.max_seq_length = min(model.max_seq_length or config.max_seq_length, config.max_seq_length)
        loss_fn = MultipleNegativesRankingLoss(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
        warmup = max(1, int(config.max_steps * config.warmup_fraction))
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            lambda s: min(
                (s + 1) / warmup, max(0.0, (config.max_steps - s) / max(1, config.max_steps - warmup))
            ),
        )
        step, seconds = 0, 0.0
        state = _load_checkpoint(work_dir / CHECKPOINT)
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            step, seconds = int(state["step"]), float(state["seconds"])
            torch.set_rng_state(state["torch_rng"])
            log.info("tuning resumed from its checkpoint", extra={"step": step})
        resumed_from = step
        model.train()

        def checkpoint() -> None:
            _save_checkpoint(
                work_dir / CHECKPOINT,
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "step": step,
                    "seconds": seconds,
                    "torch_rng": torch.get_rng_state(),
                },
            )

        last_loss: float | None = None
        reason = "max_steps"
        started = time.monotonic() - seconds
        while step < config.max_steps:
            if config.budget_seconds is not None and seconds >= config.budget_seconds:
                reason = "budget"
                break
            if keep_going is not None and not keep_going(step, config.max_steps, last_loss):
                checkpoint()
                return TrainOutcome(False, step, round(seconds, 3), resumed_from, last_loss, "stopped")
            batch = [pairs[i] for i in _batches(len(pairs), config.batch_size, config.seed, step)]
            columns = [
                [p.query for p in batch],
                [p.positive_text for p in batch],
                [texts[p.negatives[0]] if p.negatives else p.positive_text for p in batch],
            ]
            if not all(p.negatives for p in batch):
                columns.pop()  # a batch without a negative for every pair trains on in-batch ones
            prepare = getattr(model, "preprocess", None) or model.tokenize
            features = [
                {k: v.to(model.device) for k, v in prepare(column).items() if isinstance(v, torch.Tensor)}
                for column in columns
            ]
            loss = loss_fn(features, None)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            last_loss = float(loss.detach())
            seconds = time.monotonic() - started
            if step % config.checkpoint_every == 0:
                checkpoint()
        if step >= config.max_steps:
            reason = "max_steps"
        model.eval()
        out = work_dir / "model"
        if out.exists():
            shutil.rmtree(out)
        model.save(str(out), safe_serialization=True)
        fsync_tree(out)
        return TrainOutcome(True, step, round(seconds, 3), resumed_from, last_loss, reason)
    finally:
        torch.set_num_threads(previous_threads)
