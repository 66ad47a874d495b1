"""Tuning: the `tune` job kind fine-tunes the embedder on a collection's own text and registers the
result in the model registry as a new embedding version, with its lineage and held-out scores."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path

from appliance.config import Settings
from appliance.core.access import Access, Scope
from appliance.core.embedders import Embedders
from appliance.core.gateway import Gateway
from appliance.core.jobs import Jobs
from appliance.core.knowledge import Knowledge
from appliance.core.registry import Registry
from appliance.db.jobs import JobStore
from appliance.errors import ApplianceError, InvalidInput
from appliance.evaluate.generate import collection_chunks, generate_qa_items
from appliance.files import sha256_file, write_atomically
from appliance.models.catalog import MINILM_NAME, default_embedding_dir
from appliance.records import Job
from appliance.tune.dataset import DEFAULT_HELD_OUT, TrainingData, build_training_data
from appliance.tune.pairs import TrainingPair
from appliance.tune.train import TrainConfig, TrainOutcome, train_embedder

log = logging.getLogger(__name__)

JOB_KIND = "tune"
MAX_BUDGET_SECONDS = 48 * 3600
MAX_STEPS = 100_000
MAX_QUESTIONS = 1000
DEFAULT_BUDGET_SECONDS = 1800
DATA_FILE = "data.json"
SCORES_FILE = "before.json"


class _Stopped(Exception):
    """The appliance is stopping: the job stays running and resumes from its checkpoint at the next start."""


def _pair_json(p: TrainingPair) -> dict:
    return {"q": p.query, "p": p.positive, "t": p.positive_text, "o": p.origin, "n": list(p.negatives)}


def _pair_from(d: dict) -> TrainingPair:
    return TrainingPair(d["q"], d["p"], d["t"], d["o"], tuple(d["n"]))


class Tuning:
    """`tune_embedder` queues a `tune` job; its runner builds the training data (saved in the job's
    work dir, so a resumed job trains on the same split), scores the base model on the held-out
    pairs, trains with checkpoints, scores the result and registers it. With `rollout` it then
    queues the collection's switch to the new version (core/embedders.py: re-embedded beside the
    live vectors, gated on retrieval, the held-out queries included); otherwise the admin switches
    with `appliance collections embedder C --model NAME@VERSION`."""

    def __init__(
        self,
        settings: Settings,
        access: Access,
        jobs: Jobs,
        job_store: JobStore,
        knowledge: Knowledge,
        gateway: Gateway,
        registry: Registry,
        data_dir: Path,
        instance: str,
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self.access = access
        self.jobs = jobs
        self.job_store = job_store
        self.knowledge = knowledge
        self.gateway = gateway
        self.registry = registry
        self.root = Path(data_dir) / "tuning"
        self.models_root = Path(data_dir) / "models" / "tuned"
        self.instance = instance
        self.stop = stop
        self.embedders: Embedders | None = None  # set by the appliance once built (rollout)

    def tune_embedder(
        self,
        scope: Scope,
        collection: str,
        budget_seconds: float = DEFAULT_BUDGET_SECONDS,
        max_steps: int = 2000,
        batch_size: int = 32,
        questions: int = 0,
        threads: int = 1,
        held_out_fraction: float = DEFAULT_HELD_OUT,
        seed: int = 0,
        name: str | None = None,
        rollout: bool = False,
        rollout_min_gain: float = 0.0,
    ) -> Job:
        """Queue the fine-tuning of the packaged MiniLM on `collection` (admin only)."""
        scope.require_admin()
        scope.collections([collection])  # NotFound when it does not exist
        checks = (
            (
                0 < budget_seconds <= MAX_BUDGET_SECONDS,
                "budget",
                f"budget must be between 1 s and {MAX_BUDGET_SECONDS} s",
            ),
            (1 <= max_steps <= MAX_STEPS, "max_steps", f"max_steps must be between 1 and {MAX_STEPS}"),
            (2 <= batch_size <= 512, "batch_size", "batch_size must be between 2 and 512"),
            (
                0 <= questions <= MAX_QUESTIONS,
                "questions",
                f"questions must be between 0 and {MAX_QUESTIONS}",
            ),
            (1 <= threads <= 256, "threads", "threads must be between 1 and 256"),
            (0 < held_out_fraction < 1, "held_out_fraction", "held_out_fraction must be between 0 and 1"),
            (-1 <= rollout_min_gain <= 1, "rollout_min_gain", "rollout_min_gain must be between -1 and 1"),
        )
        for ok, param, message in checks:
            if not ok:
                raise InvalidInput(message, param=param)
        family = name or f"{MINILM_NAME}-{collection}"
        from appliance.models.registry import check_family_name

        check_family_name(family)
        options = {
            "target": "embedder",
            "collection": collection,
            "budget_seconds": budget_seconds,
            "max_steps": max_steps,
            "batch_size": batch_size,
            "questions": questions,
            "threads": threads,
            "held_out_fraction": held_out_fraction,
            "seed": seed,
            "name": family,
            "rollout": rollout,
            "rollout_min_gain": rollout_min_gain,
        }
        return self.jobs.submit(JOB_KIND, collection, options)

    # -- the job ---------------------------------------------------------------------------------
    def run_job(self, job_id: str) -> None:
        token = self.job_store.claim(job_id, self.instance, self.settings.jobs.lease_seconds)
        if token is None:
            return
        try:
            summary = self._run(job_id, token)
        except _Stopped:
            log.info("tuning paused by shutdown; it resumes from its checkpoint", extra={"job_id": job_id})
            return
        except Exception as exc:
            log.exception("tuning failed", extra={"job_id": job_id})
            detail = exc.detail if isinstance(exc, ApplianceError) else f"{type(exc).__name__}: {exc}"
            self.job_store.finish(job_id, "failed", detail, token=token)
            return
        if summary is not None:
            self.job_store.finish(job_id, "succeeded", None, summary, token=token)

    def _run(self, job_id: str, token: str) -> dict | None:
        from appliance.tune.heldout import encoder, held_out_scores

        options = (self.job_store.get(job_id).summary or {})["options"]
        work = self.root / job_id
        work.mkdir(parents=True, exist_ok=True)
        base = default_embedding_dir()
        threads = options["threads"]
        summary: dict = {"options": options, "phase": "data", "base_model": MINILM_NAME}
        self.job_store.set_summary(job_id, summary)
        encode = encoder(base, threads=threads)
        data = self._data(work, options, encode)
        summary["data"] = data.summary()
        if not data.train:
            raise InvalidInput(
                f"collection {options['collection']!r} yields no training pairs: it needs chunks with "
                "headings or of several sentences"
            )
        self._check(job_id, token)
        before = _read_json(work / SCORES_FILE)
        if before is None:
            summary["phase"] = "scoring base model"
            self.job_store.set_summary(job_id, summary)
            before = held_out_scores(encode, data.texts, data.held_out)
            write_atomically(work / SCORES_FILE, json.dumps(before).encode())
        summary.update(phase="training", held_out_before=before)
        self.job_store.set_summary(job_id, summary)
        config = TrainConfig(
            max_steps=options["max_steps"],
            batch_size=options["batch_size"],
            budget_seconds=options["budget_seconds"],
            threads=threads,
            seed=options["seed"],
            checkpoint_every=max(1, min(50, options["max_steps"] // 4)),
        )

        def keep_going(step: int, total: int, loss: float | None) -> bool:
            self.job_store.set_progress(job_id, total, step)
            if self.stop.is_set():
                return False
            return self.job_store.renew(job_id, token, self.settings.jobs.lease_seconds)

        outcome = train_embedder(base, data.train, data.texts, work, config, keep_going)
        if not outcome.finished:
            if self.stop.is_set():
                raise _Stopped
            log.info("tuning cancelled", extra={"job_id": job_id})
            return None
        self.job_store.set_progress(job_id, config.max_steps, config.max_steps)
        summary["phase"] = "scoring tuned model"
        self.job_store.set_summary(job_id, summary)
        after = held_out_scores(encoder(work / "model", threads=threads), data.texts, data.held_out)
        self._check(job_id, token)
        summary.update(phase="done", held_out_after=after, training=asdict(outcome), config=asdict(config))
        summary["model"] = self._register(job_id, work, options, summary, outcome)
        if options.get("rollout") and self.embedders is not None:
            summary["rollout"] = self._rollout(options, summary["model"])
        return summary

    def _check(self, job_id: str, token: str) -> None:
        if self.stop.is_set():
            raise _Stopped
        if not self.job_store.renew(job_id, token, self.settings.jobs.lease_seconds):
            raise _Stopped  # cancelled: the job is no longer this run's to finish

    def _data(self, work: Path, options: dict, encode) -> TrainingData:
        """The training data, built once per job and read back on a resume."""
        saved = _read_json(work / DATA_FILE)
        if saved is not None:
            return TrainingData(
                saved["texts"],
                [_pair_from(d) for d in saved["train"]],
                [_pair_from(d) for d in saved["held_out"]],
                None,
            )
        collection = options["collection"]
        chunks = collection_chunks(self.knowledge.catalog, collection)
        if not chunks:
            raise InvalidInput(f"collection {collection!r} has no chunks to train on")
        items = []
        if options["questions"]:
            runtime = self.gateway.runtime_for("default")
            items, _report = generate_qa_items(
                chunks,
                runtime,
                options["questions"],
                options["seed"],
                unanswerable_fraction=0.0,
                cancel=self.stop,
            )
        data = build_training_data(
            chunks,
            encode,
            questions=items,
            held_out_fraction=options["held_out_fraction"],
            seed=options["seed"],
        )
        saved = {
            "texts": data.texts,
            "train": [_pair_json(p) for p in data.train],
            "held_out": [_pair_json(p) for p in data.held_out],
        }
        write_atomically(work / DATA_FILE, json.dumps(saved).encode())
        return data

    def _register(self, job_id: str, work: Path, options: dict, summary: dict, outcome: TrainOutcome) -> dict:
        """Move the trained folder under the data dir's models and register it as the family's next
        embedding version; its lineage is recorded where a probe's result would be."""
        dest = self.models_root / options["name"] / job_id
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            (work / "model").rename(dest)
        weights = dest / "model.safetensors"
        models = self.registry.registry
        tags = ["tuned", f"collection:{options['collection']}", f"base:{MINILM_NAME}"]
        version = models.register_pinned(
            options["name"],
            "embedding",
            "sentence-transformers",
            dest,
            sha256_file(weights),
            None,
            source="tuned",
            tags=tags,
            licence="Apache-2.0",
        )
        lineage = {
            "job": job_id,
            "base_model": MINILM_NAME,
            "collection": options["collection"],
            "data": summary["data"],
            "held_out_before": summary["held_out_before"],
            "held_out_after": summary["held_out_after"],
            "training": asdict(outcome),
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        models.store.set_probe(
            version.name, version.version, "ready", None, version.tags, {"lineage": lineage}
        )
        self.registry.audit.append(
            "model.tuned",
            principal=self.access.system_scope().principal,
            target=f"{version.name}@{version.version}",
            detail={
                "job": job_id,
                "collection": options["collection"],
                "held_out_after": summary["held_out_after"],
            },
        )
        return {"name": version.name, "version": version.version, "path": str(dest)}

    def _rollout(self, options: dict, model: dict) -> dict:
        """Queue the collection's switch to the version just registered; a refusal (a switch
        waiting for confirmation) is reported, the tuning itself succeeded."""
        try:
            job = self.embedders.switch(
                self.access.system_scope(),
                options["collection"],
                f"{model['name']}@{model['version']}",
                min_gain=options.get("rollout_min_gain", 0.0),
            )
        except ApplianceError as exc:
            return {"job": None, "error": exc.detail}
        return {"job": job.id, "error": None}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
