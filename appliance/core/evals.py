"""Evals: eval sets (imported, or written by other capabilities), runs as jobs, comparisons and gates."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import msgspec

from appliance.config import Settings
from appliance.core.access import Scope
from appliance.core.eval_runner import EvalRunner
from appliance.core.jobs import Jobs
from appliance.core.knowledge import Knowledge
from appliance.db.catalog import check_collection_name
from appliance.db.evals import EvalStore
from appliance.db.jobs import TERMINAL_STATES, JobStore
from appliance.errors import Conflict, InvalidInput
from appliance.evaluate.compare import compare_outcomes
from appliance.evaluate.gates import check_thresholds_valid, evaluate_gate
from appliance.evaluate.scorecard import primary_score, scorecard
from appliance.evaluate.sets import (
    QA_SET_KINDS,
    CorpusDocument,
    check_qa_items,
    content_hash,
    parse_set,
    read_dir,
)
from appliance.ingest.intake import NewDocument
from appliance.records import (
    EvalGate,
    EvalOutcome,
    EvalRun,
    EvalRunOptions,
    EvalSet,
    GateReport,
    GateThreshold,
    QAItem,
    RunComparison,
)
from appliance.retrieve.search import MODES

log = logging.getLogger(__name__)

# The judges an eval run can score its answers with (EvalRunOptions.judge).
JUDGES = ("llm", "lexical")


class Evals:
    """Every call is an admin's (evaluation sees every collection). Entry points for other
    capabilities: `create_qa_set` (generated and feedback sets), `start_run`, `check_gate`."""

    def __init__(
        self,
        settings: Settings,
        store: EvalStore,
        job_store: JobStore,
        jobs: Jobs,
        knowledge: Knowledge,
        runner: EvalRunner,
        signal: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.store = store
        self.job_store = job_store
        self.jobs = jobs
        self.knowledge = knowledge
        self.runner = runner
        self.signal = signal

    # -- sets ------------------------------------------------------------------------------------
    def import_dir(
        self, scope: Scope, name: str, path: Path, collection: str | None = None, description: str = ""
    ) -> EvalSet:
        """A set from a directory on this server (BEIR layout, or questions.jsonl [+ corpus.jsonl])."""
        scope.require_admin()
        return self.import_files(scope, name, read_dir(Path(path)), collection, description, str(path))

    def import_files(
        self,
        scope: Scope,
        name: str,
        files: Mapping[str, str],
        collection: str | None = None,
        description: str = "",
        origin: str = "upload",
    ) -> EvalSet:
        """A set from its files' text (relative name -> text). A corpus is ingested into
        `collection` (default: the set's name) with each document's `_id` as its source_id."""
        scope.require_admin()
        check_collection_name(name)
        parsed = parse_set(files)
        target = check_collection_name(collection or name) if parsed.corpus else None
        evalset, written = self.store.save_set(
            name,
            parsed.kind,
            parsed.items,
            parsed.content_hash,
            description,
            origin,
            target,
            len(parsed.corpus),
        )
        if parsed.corpus and (written or self._missing_corpus(target, len(parsed.corpus))):
            jobs = self._ingest(scope, target, parsed.corpus)
            self.store.set_ingest_jobs(name, evalset.version, jobs)
            evalset = self.store.get_set(name, evalset.version)
        log.info("eval set imported", extra={"set": name, "version": evalset.version, "written": written})
        return evalset

    def create_qa_set(
        self,
        scope: Scope,
        name: str,
        items: Sequence[QAItem | dict],
        kind: str = "qa",
        description: str = "",
        collection: str | None = None,
        origin: str | None = None,
    ) -> EvalSet:
        """A QA set from items in memory: the entry point of `eval generate` (kind "generated")
        and of feedback (kind "feedback"). Items are QAItems (or dicts of the same fields) whose
        `gold` are source_ids in `collection` (recorded as the set's collection: a run defaults
        to it). Checked like a questions.jsonl; the same items again keep the version, other
        items make the next one (or replace a version no run has used yet)."""
        scope.require_admin()
        check_collection_name(name)
        if kind not in QA_SET_KINDS:
            raise InvalidInput(f"kind {kind!r} is not one of {', '.join(QA_SET_KINDS)}")
        if collection is not None:
            check_collection_name(collection)
        checked = check_qa_items(items)
        evalset, _ = self.store.save_set(
            name, kind, checked, content_hash(checked), description, origin or kind, collection
        )
        return evalset

    def _missing_corpus(self, collection: str, size: int) -> bool:
        collections = {c.name: c for c in self.knowledge.catalog.list_collections([collection])}
        return collection not in collections or collections[collection].documents < size

    def _ingest(self, scope: Scope, collection: str, corpus: Sequence[CorpusDocument]) -> list[str]:
        self.knowledge.catalog.ensure_collection(collection)
        batch = self.settings.limits.max_batch_documents
        jobs = []
        for start in range(0, len(corpus), batch):
            docs = [
                NewDocument(source_id=d.id, title=d.title or None, text=d.text, source_kind="eval")
                for d in corpus[start : start + batch]
            ]
            jobs.append(self.knowledge.submit(scope, collection, docs)[0])
        return jobs

    def list_sets(self, scope: Scope, all_versions: bool = False) -> list[EvalSet]:
        scope.require_admin()
        return self.store.list_sets(all_versions)

    def get_set(
        self, scope: Scope, name: str, version: int | None = None, with_items: bool = False
    ) -> EvalSet:
        scope.require_admin()
        evalset = self.store.get_set(name, version)
        if with_items:
            evalset = msgspec.structs.replace(evalset, items=self.store.items(name, evalset.version))
        return evalset

    # -- runs ------------------------------------------------------------------------------------
    def start_run(
        self,
        scope: Scope,
        set_name: str,
        collection: str | None = None,
        mode: str | None = None,
        top_k: int = 100,
        limit: int | None = None,
        retrieval_only: bool = False,
        model: str | None = None,
        version: int | None = None,
        judge: str | None = None,
    ) -> EvalRun:
        """Queue an `eval` job over a set (its latest version unless `version`); the collection
        defaults to the one its corpus went into. A retrieval set never asks the chat model."""
        scope.require_admin()
        evalset = self.store.get_set(set_name, version)
        collection = collection or evalset.collection
        if not collection:
            raise InvalidInput(f"eval set {set_name!r} carries no corpus: name the collection to run it on")
        scope.collections([collection])  # NotFound when it does not exist
        if mode is not None and mode not in MODES:
            raise InvalidInput(f"unknown search mode {mode!r}: use one of {', '.join(MODES)}")
        if not 1 <= top_k <= self.settings.limits.max_top_k:
            raise InvalidInput(f"top_k must be between 1 and {self.settings.limits.max_top_k}")
        if limit is not None and limit < 1:
            raise InvalidInput("limit must be >= 1")
        retrieval_only = retrieval_only or evalset.kind == "retrieval"
        if judge is not None and judge not in JUDGES:
            raise InvalidInput(f"unknown judge {judge!r}: use one of {', '.join(JUDGES)}", param="judge")
        if judge is not None and retrieval_only:
            raise InvalidInput("a judge scores answers: a retrieval-only run has none", param="judge")
        options = EvalRunOptions(
            collection=collection,
            mode=mode,
            top_k=top_k,
            limit=limit,
            retrieval_only=retrieval_only,
            model=model,
            judge=judge,
        )
        run_id = "run_" + uuid.uuid4().hex[:16]
        # The job and its run exist before a worker hears of it.
        job_id = self.job_store.create("eval", collection, [])
        self.job_store.set_summary(job_id, {"options": msgspec.to_builtins(options), "run_id": run_id})
        self.store.create_run(run_id, evalset.name, evalset.version, job_id, options)
        self.signal(job_id)
        return self.get_run(scope, run_id)

    def run_job(self, job_id: str) -> None:
        """The `eval` job kind's runner."""
        self.runner.run_job(job_id)

    def get_run(self, scope: Scope, run_id: str) -> EvalRun:
        scope.require_admin()
        return self._present(self.store.run_row(run_id))

    def list_runs(self, scope: Scope, set_name: str | None = None, limit: int = 50) -> list[EvalRun]:
        scope.require_admin()
        return [self._present(r) for r in self.store.run_rows(set_name, limit)]

    def _present(self, row: dict) -> EvalRun:
        job = self.job_store.get(row["job_id"])
        card = row["scorecard"]
        if card is None:  # not finished: the scorecard of the items done so far
            card = scorecard(self.store.outcomes(row["id"]), self.runner.costs)
        return EvalRun(
            id=row["id"],
            set_name=row["set_name"],
            set_version=row["set_version"],
            set_kind=self.store.get_set(row["set_name"], row["set_version"]).kind,
            job_id=row["job_id"],
            state=job.state,
            progress=job.progress,
            options=row["options"],
            config=row["config"],
            scorecard=card,
            error=job.error,
            created_at=row["created_at"],
            finished_at=row["finished_at"],
        )

    def run_items(
        self,
        scope: Scope,
        run_id: str,
        order: str = "worst",
        metric: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[EvalOutcome]:
        """A run's item outcomes, worst first (failed items, then by the answer's own score, or
        by `metric` ascending), or in set order (`order="ordinal"`)."""
        scope.require_admin()
        self.store.run_row(run_id)
        outcomes = self.store.outcomes(run_id)
        if order == "worst":
            if metric:
                outcomes.sort(
                    key=lambda o: (o.scores.get(metric) is None, o.scores.get(metric) or 0.0, o.ordinal)
                )
            else:
                outcomes.sort(key=lambda o: (primary_score(o), o.ordinal))
        elif order != "ordinal":
            raise InvalidInput("order is worst or ordinal")
        return outcomes[offset : offset + limit]

    def compare(self, scope: Scope, run_a: str, run_b: str) -> RunComparison:
        scope.require_admin()
        a, b = self.store.run_row(run_a), self.store.run_row(run_b)
        if a["set_name"] != b["set_name"]:
            raise InvalidInput(
                f"runs of different sets ({a['set_name']!r}, {b['set_name']!r}) have no items to pair"
            )
        cfg = self.settings.eval
        pairs, metrics = compare_outcomes(
            self.store.outcomes(run_a),
            self.store.outcomes(run_b),
            cfg.bootstrap_resamples,
            cfg.bootstrap_seed,
        )
        if pairs == 0:
            raise Conflict("the two runs have no completed item in common")
        return RunComparison(
            run_a=run_a,
            run_b=run_b,
            paired_items=pairs,
            confidence=0.95,
            resamples=cfg.bootstrap_resamples,
            seed=cfg.bootstrap_seed,
            metrics=metrics,
        )

    # -- gates -----------------------------------------------------------------------------------
    def create_gate(
        self,
        scope: Scope,
        name: str,
        set_name: str,
        thresholds: Sequence[GateThreshold],
        baseline_run: str | None = None,
        run_options: EvalRunOptions | None = None,
        description: str = "",
    ) -> EvalGate:
        """Store (or replace) a gate: thresholds on a set's scorecard, absolute or against
        `baseline_run` (a finished run of that set); `run_options` let a check run the set itself."""
        scope.require_admin()
        check_collection_name(name)
        self.store.get_set(set_name)
        check_thresholds_valid(thresholds, baseline_run is not None)
        if baseline_run is not None:
            self._finished_run_of(set_name, baseline_run, "baseline")
        gate = EvalGate(
            name=name,
            set_name=set_name,
            thresholds=list(thresholds),
            baseline_run=baseline_run,
            run_options=run_options,
            description=description,
        )
        return self.store.save_gate(gate)

    def list_gates(self, scope: Scope) -> list[EvalGate]:
        scope.require_admin()
        return self.store.list_gates()

    def check_gate(
        self, scope: Scope, name: str, run_id: str | None = None, wait: float | None = None
    ) -> GateReport:
        """Pass or fail a run against the gate. Without `run_id` the gate runs its set with its
        run options and waits for it (up to `wait` seconds, default limits.wait_timeout_seconds);
        a run not finished by then reports `pending`: check again with its id."""
        scope.require_admin()
        gate = self.store.get_gate(name)
        if run_id is None:
            if gate.run_options is None:
                raise InvalidInput(f"gate {name!r} has no run options: give the run to check")
            o = gate.run_options
            run_id = self.start_run(
                scope, gate.set_name, o.collection, o.mode, o.top_k, o.limit, o.retrieval_only, o.model
            ).id
            self.jobs.wait(self.store.run_row(run_id)["job_id"], wait)
        run = self.get_run(scope, run_id)
        if run.set_name != gate.set_name:
            raise InvalidInput(
                f"run {run_id!r} is of set {run.set_name!r}; gate {name!r} checks {gate.set_name!r}"
            )
        if run.state not in TERMINAL_STATES:
            return GateReport(
                gate=name, run_id=run_id, baseline_run=gate.baseline_run, state="pending", checks=[]
            )
        if run.state != "succeeded":
            raise Conflict(f"run {run_id!r} {run.state}: {run.error or 'no scorecard'}")
        baseline = None
        if gate.baseline_run is not None:
            baseline = self._finished_run_of(gate.set_name, gate.baseline_run, "baseline").scorecard
        checks = evaluate_gate(gate.thresholds, run.scorecard, baseline)
        state = "passed" if all(c.passed for c in checks) else "failed"
        return GateReport(
            gate=name, run_id=run_id, baseline_run=gate.baseline_run, state=state, checks=checks
        )

    def _finished_run_of(self, set_name: str, run_id: str, role: str) -> EvalRun:
        row = self.store.run_row(run_id)
        run = self._present(row)
        if run.set_name != set_name:
            raise InvalidInput(f"{role} run {run_id!r} is of set {run.set_name!r}, not {set_name!r}")
        if run.state != "succeeded":
            raise InvalidInput(f"{role} run {run_id!r} is {run.state}: it needs a finished run")
        return run
