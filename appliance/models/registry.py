"""The model registry's rules: families of immutable versions, intake (verify, probe, tag), aliases and rollback.

A version is registered once with the sha256 of its weights; `resolve` hands serving the verified
local path of a reference and refuses a file whose hash changed. Aliases are per family; `default`
(chat) and `embedding` are held by one family at a time. Eval gates live above this layer (core):
a promotion arrives here with its report already decided.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

from appliance.db.registry import RegistryStore
from appliance.errors import ApplianceError, Conflict, InvalidInput, NotFound, NotReady
from appliance.files import sha256_file
from appliance.models.gguf_header import GGUFHeader, HeaderError, read_header
from appliance.models.probe import ProbeLimits, probe_remote, run_probe
from appliance.models.remote import RemoteModels
from appliance.registry_records import AliasMove, ModelFamily, ModelVersion, RemoteEndpoint, ResolvedModel

log = logging.getLogger(__name__)

FAMILY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ALIAS_NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")
GATED_ALIASES = ("staging", "production")
# Aliases one family holds at a time, and the kind of model they name.
GLOBAL_ALIASES = {"default": "chat", "embedding": "embedding"}
LICENCE_NAMES = {"gemma": "Gemma Terms of Use", "apache-2.0": "Apache-2.0", "mit": "MIT"}


@dataclass(frozen=True, slots=True)
class IntakeLimits:
    max_bytes: int  # larger files are rejected as oversized, unread
    probe: ProbeLimits


def default_memory_budget() -> int:
    """Half the machine's physical memory."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 4 * 1024**3


def check_family_name(name: object) -> str:
    if not isinstance(name, str) or FAMILY_NAME.fullmatch(name) is None:
        raise InvalidInput(
            f"invalid model name {name!r}: use 1-128 characters A-Z, a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit",
            param="name",
        )
    return name


def check_alias(alias: object) -> str:
    if not isinstance(alias, str) or ALIAS_NAME.fullmatch(alias) is None:
        raise InvalidInput(
            f"invalid alias {alias!r}: use 1-32 characters a-z, 0-9, '_' or '-', starting with a letter",
            param="alias",
        )
    return alias


def family_name_for(header: GGUFHeader | None, path: Path) -> str:
    """A family name from the header's general.name (else the file's stem), made a valid name."""
    raw = (header.display_name if header is not None else "") or path.stem
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", raw).strip("-._")[:128]
    return slug or "model"


def tags_for(header: GGUFHeader | None, probe: dict | None) -> list[str]:
    """Capability tags from what the probe saw and the header says, never from the file's name."""
    tags: set[str] = set()
    if probe:
        if probe.get("completion", {}).get("ok"):
            tags.add("completion")
        if probe.get("chat", {}).get("ok"):
            tags.add("chat")
        if probe.get("json_output", {}).get("ok"):
            tags.add("json_output")
        if probe.get("native_tools") and probe.get("chat", {}).get("ok"):
            tags.add("tools")
        if probe.get("remote"):
            tags.add("remote")
    if header is not None:
        tags.add(f"arch:{header.architecture}")
        tags.add(f"quant:{header.quantisation}")
        if (header.context_length or 0) >= 32768:
            tags.add("long-context")
        described = " ".join(
            str(v)
            for k in ("general.tags", "general.basename", "general.finetune", "general.name")
            for v in (
                [header.metadata.get(k)]
                if not isinstance(header.metadata.get(k), list)
                else header.metadata[k]
            )
            if v
        ).lower()
        if re.search(r"\bcode|coder\b", described):
            tags.add("code")
        languages = header.metadata.get("general.languages")
        if isinstance(languages, list) and len(languages) > 1:
            tags.add("multilingual")
    return sorted(tags)


def _probe_passed(probe: dict) -> str | None:
    """None when the probe passed, else why not."""
    if not probe.get("loaded"):
        return probe.get("error") or "the model did not load"
    if probe.get("error"):
        return probe["error"]
    # A remote server may offer chat only (no /completions): a working chat is enough there.
    if not probe.get("completion", {}).get("ok") and not (
        probe.get("remote") and probe.get("chat", {}).get("ok")
    ):
        return "it generated no tokens: " + str(probe.get("completion", {}).get("error", ""))
    return None


def remote_identity(endpoint: RemoteEndpoint) -> str:
    """What a remote version is known by in place of its weights' sha256: the server and the model
    there (the same pair again is the same version; where its key is read is not part of it)."""
    return hashlib.sha256(f"remote\n{endpoint.url.rstrip('/')}\n{endpoint.model}".encode()).hexdigest()


class ModelRegistry:
    """Families, versions and aliases over the registry store; intake of GGUF files."""

    def __init__(
        self,
        store: RegistryStore,
        models_dir: Path,
        limits: IntakeLimits,
        remotes: RemoteModels | None = None,
    ) -> None:
        self.store = store
        self.remotes = remotes  # opens remote versions with the server's network policy
        self.models_dir = Path(models_dir).absolute()
        self.limits = limits
        # One registration at a time decides "same bytes: same version" (the probe runs outside it).
        self._intake = threading.Lock()

    # -- reading ---------------------------------------------------------------------------------
    def families(self) -> list[ModelFamily]:
        return [self.store.family(name) for name in self.store.family_names()]

    def family(self, name: str) -> ModelFamily:
        return self.store.family(name)

    def history(self, name: str) -> list[AliasMove]:
        return self.store.history(name)

    # -- intake ----------------------------------------------------------------------------------
    def register_file(
        self, path: Path, name: str | None = None, source: str = "import", probe: bool = True
    ) -> ModelVersion:
        """Verify and probe a GGUF file and register it as its family's next version (the same bytes
        again: the version they already are). A file that fails any check is registered `rejected`
        with its reason, so the attempt and why it failed stay on record; it is never served."""
        path = Path(path).expanduser().absolute()
        if name is not None:
            check_family_name(name)
        if not path.is_file():
            raise InvalidInput(f"{path} is not a file on the server", param="path")
        size = path.stat().st_size
        reason: str | None = None
        header: GGUFHeader | None = None
        if size > self.limits.max_bytes:
            reason = f"oversized: {size} bytes, above the limit of {self.limits.max_bytes}"
        else:
            try:
                header = read_header(path)
            except HeaderError as exc:
                reason = f"not a usable GGUF file: {exc}"
            except OSError as exc:
                raise InvalidInput(f"{path} cannot be read: {exc}", param="path") from None
        if header is not None and header.data_bytes > self.limits.probe.memory_bytes:
            reason = (
                f"oversized: its weights need {header.data_bytes} bytes, above the memory budget "
                f"of {self.limits.probe.memory_bytes}"
            )
            header = None
        family = name or family_name_for(header, path)
        sha = sha256_file(path)
        fields = {
            "kind": "chat",
            "backend": "llama.cpp",
            "path": str(path),
            "sha256": sha,
            "size_bytes": size,
            "format": "gguf" if header is not None else "unknown",
            "quantisation": header.quantisation if header else None,
            "architecture": header.architecture if header else None,
            "context_length": header.context_length if header else None,
            "chat_template_sha256": header.chat_template_sha256 if header else None,
            "licence": _licence(header),
            "tags": tags_for(header, None),
            "state": "rejected" if reason else ("probing" if probe else "registered"),
            "reason": reason,
            "probe": None,
            "source": source,
        }
        with self._intake:
            self.store.ensure_family(family, "chat")
            existing = self.store.version_with_sha(family, sha)
            if existing is not None:
                return self.store.version(family, existing)
            version = self.store.add_version(family, fields)
        log.info(
            "model registered",
            extra={"model": family, "version": version, "state": fields["state"], "reason": reason},
        )
        if reason is None and probe:
            self.probe(family, version)
        return self.store.version(family, version)

    def register_remote(
        self,
        endpoint: RemoteEndpoint,
        name: str | None = None,
        context_length: int | None = None,
        source: str = "import",
        probe: bool = True,
    ) -> ModelVersion:
        """Register a model served by an OpenAI-compatible server (backend "remote") and probe it
        like a file: the same checks where they apply, no sha256 of weights or file (its identity
        is the server and the model's id there). The URL must pass the network policy first."""
        if self.remotes is None:
            raise NotReady("remote models are not available in this registry")
        family = check_family_name(name) if name is not None else _slug(endpoint.model)
        self.remotes.check(endpoint, family)
        if context_length is not None and not 16 <= context_length <= 10_000_000:
            raise InvalidInput("context_length must be between 16 and 10000000", param="context_length")
        identity = remote_identity(endpoint)
        fields = {
            "kind": "chat",
            "backend": "remote",
            "path": endpoint.url,
            "sha256": identity,
            "size_bytes": 0,
            "format": "openai-api",
            "context_length": context_length,
            "licence": "",
            "tags": ["remote"],
            "state": "probing" if probe else "registered",
            "reason": None,
            "probe": None,
            "source": source,
            "remote": endpoint,
        }
        with self._intake:
            self.store.ensure_family(family, "chat")
            existing = self.store.version_with_sha(family, identity)
            if existing is not None:
                return self.store.version(family, existing)
            version = self.store.add_version(family, fields)
        log.info(
            "remote model registered",
            extra={
                "model": family,
                "version": version,
                "remote": endpoint.url,
                "remote_model": endpoint.model,
            },
        )
        if probe:
            self.probe(family, version)
        return self.store.version(family, version)

    def probe(self, family: str, version: int) -> ModelVersion:
        """Run the probe on a version (in a child process) and record its outcome and tags."""
        current = self.store.version(family, version)
        if current.remote is not None:
            return self._probe_remote(current)
        path = Path(current.path)
        header = read_header(path) if current.format == "gguf" else None
        result = run_probe(path, self.limits.probe)
        failed = _probe_passed(result)
        state, reason = ("rejected", f"probe failed: {failed}") if failed else ("ready", None)
        self.store.set_probe(family, version, state, reason, tags_for(header, result), result)
        log.info(
            "model probed", extra={"model": family, "version": version, "state": state, "reason": reason}
        )
        return self.store.version(family, version)

    def _probe_remote(self, current: ModelVersion) -> ModelVersion:
        assert current.remote is not None
        if self.remotes is None:
            raise NotReady("remote models are not available in this registry")
        try:
            runtime = self.remotes.open(current.name, current.remote, current.context_length)
        except ApplianceError as exc:  # the policy changed since, or the key's file went
            result: dict = {"loaded": False, "remote": current.path, "error": exc.detail}
        else:
            try:
                result = probe_remote(runtime, self.limits.probe.max_tokens)
            finally:
                runtime.close()
        failed = _probe_passed(result)
        state, reason = ("rejected", f"probe failed: {failed}") if failed else ("ready", None)
        found = None if current.context_length else result.get("context_length_reported")
        self.store.set_probe(
            current.name, current.version, state, reason, tags_for(None, result), result, found
        )
        log.info(
            "model probed",
            extra={"model": current.name, "version": current.version, "state": state, "reason": reason},
        )
        return self.store.version(current.name, current.version)

    def take_from_inbox(self, path: Path) -> ModelVersion:
        """Move a file dropped into the inbox into the registry's store (by its sha256), then register it."""
        sha = sha256_file(path)
        dest = self.models_dir / "store" / sha[:16] / path.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, dest)
        except OSError:  # another file system: copy, then remove the dropped file
            shutil.copyfile(path, dest)
            path.unlink()
        return self.register_file(dest, source="inbox")

    def register_pinned(
        self,
        name: str,
        kind: str,
        backend: str,
        path: Path,
        sha256: str,
        size: int | None,
        source: str,
        tags: list[str],
        licence: str = "",
    ) -> ModelVersion:
        """A model pinned by the appliance or the manifest (built-ins): registered `ready` without a
        probe, its header read when the file is already there. Idempotent."""
        known = self.store.version_with_sha(name, sha256)  # every start: answered without the header
        if known is not None:
            return self.store.version(name, known)
        header = None
        if backend == "llama.cpp" and path.is_file():
            try:
                header = read_header(path)
            except HeaderError:
                header = None
        fields = {
            "kind": kind,
            "backend": backend,
            "path": str(path),
            "sha256": sha256,
            "size_bytes": size or (path.stat().st_size if path.is_file() else 0),
            "format": "gguf" if backend == "llama.cpp" else "safetensors",
            "quantisation": header.quantisation if header else None,
            "architecture": header.architecture if header else None,
            "context_length": header.context_length if header else None,
            "chat_template_sha256": header.chat_template_sha256 if header else None,
            "licence": licence or _licence(header),
            "tags": sorted(set(tags) | set(tags_for(header, None))),
            "state": "ready",
            "reason": None,
            "probe": {"skipped": f"pinned by {source}"},
            "source": source,
        }
        with self._intake:
            self.store.ensure_family(name, kind)
            existing = self.store.version_with_sha(name, sha256)
            if existing is not None:
                return self.store.version(name, existing)
            version = self.store.add_version(name, fields)
        return self.store.version(name, version)

    # -- aliases ---------------------------------------------------------------------------------
    def move_alias(
        self,
        family: str,
        alias: str,
        version: int,
        *,
        actor: str,
        reason: str = "",
        action: str = "promote",
        gated: bool = False,
        gate: str | None = None,
        report_id: str | None = None,
        report: dict | None = None,
    ) -> AliasMove:
        """Point `alias` of `family` at `version`, writing its history row. A rejected version is
        never promoted; a version not probed ready only through a gate; `default` and `embedding`
        leave the family that held them (a history row there too)."""
        check_alias(alias)
        fam = self.store.family(family)
        target = self.store.version(fam.name, version)
        if target.state == "rejected":
            raise Conflict(
                f"{fam.name} version {version} was rejected ({target.reason}): it can never be promoted"
            )
        if target.state != "ready":
            raise Conflict(
                f"{fam.name} version {version} is {target.state}: only a version whose probe passed is promoted"
            )
        wanted_kind = GLOBAL_ALIASES.get(alias)
        if wanted_kind is not None and target.kind != wanted_kind:
            raise InvalidInput(
                f"alias {alias!r} names a {wanted_kind} model; {fam.name} is a {target.kind} model"
            )
        if wanted_kind == "chat" and "chat" not in target.tags:
            raise Conflict(
                f"{fam.name} version {version} has no working chat template: it cannot be the default"
            )
        if fam.aliases.get(alias) == version:
            raise Conflict(f"{alias!r} of {fam.name} is already version {version}")
        if wanted_kind is not None:
            for holder, _ in self.store.alias_holders(alias):
                if holder.lower() != fam.name.lower():
                    self.store.move_alias(
                        holder,
                        alias,
                        None,
                        action="remove",
                        actor=actor,
                        reason=f"{alias} moved to {fam.name}",
                    )
        return self.store.move_alias(
            fam.name,
            alias,
            version,
            action=action,
            actor=actor,
            reason=reason,
            gated=gated,
            gate=gate,
            eval_report_id=report_id,
            eval_report=report,
        )

    def rollback_target(self, family: str, alias: str) -> int:
        """The version `alias` held before its current one came by a promotion (rollbacks pop, like a stack)."""
        fam = self.store.family(family)
        current = fam.aliases.get(alias)
        if current is None:
            raise Conflict(f"{fam.name} has no {alias!r} alias to roll back")
        for move in reversed(self.store.history(fam.name, alias)):
            if move.version == current and move.action not in ("rollback", "remove"):
                if move.previous_version is None:
                    break
                return move.previous_version
        raise Conflict(f"{alias!r} of {fam.name} has no earlier version to roll back to")

    # -- resolving -------------------------------------------------------------------------------
    def knows(self, reference: str) -> bool:
        """Whether `reference` names a family or a held alias (cheap: nothing is hashed or loaded;
        `resolve` still decides whether it can be served)."""
        name, _, _ = reference.strip().partition("@")
        return self.store.family_row(name) is not None or bool(self.store.alias_holders(name))

    def resolve(self, reference: str, kind: str | None = None) -> ResolvedModel:
        """The version a reference names, its weights checked against their sha256: `name`
        (its production alias, else the newest ready version), `name@version`, `name@alias`, or a
        bare alias held by one family (of `kind`, when given). Raises NotFound for an unknown
        reference, Conflict for a rejected version or an ambiguous alias, NotReady for weights whose
        hash no longer matches."""
        name, _, qualifier = reference.strip().partition("@")
        alias: str | None = None
        if self.store.family_row(name) is not None:
            fam = self.store.family(name)
            if not qualifier:
                alias = "production" if "production" in fam.aliases else None
                alias = alias or next((a for a in GLOBAL_ALIASES if a in fam.aliases), None)
                if alias is not None:
                    version = fam.aliases[alias]
                else:
                    ready = [v.version for v in fam.versions if v.state == "ready"]
                    if not ready:
                        raise Conflict(f"{fam.name} has no ready version")
                    version = ready[-1]
            elif qualifier.isdigit():
                version = int(qualifier)
            else:
                alias = qualifier
                if alias not in fam.aliases:
                    raise NotFound(
                        f"{fam.name} has no alias {alias!r}", param="model", code="model_not_found"
                    )
                version = fam.aliases[alias]
        elif not qualifier:
            alias = name
            holders = [
                (f, v)
                for f, v in self.store.alias_holders(alias)
                if kind is None or self.store.family(f).kind == kind
            ]
            if not holders:
                raise NotFound(
                    f"no model {reference!r} in the registry", param="model", code="model_not_found"
                )
            if len(holders) > 1:
                named = ", ".join(f"{f}@{alias}" for f, _ in holders)
                raise Conflict(f"alias {alias!r} is held by several models: name one ({named})")
            name, version = holders[0]
        else:
            raise NotFound(f"no model {name!r} in the registry", param="model", code="model_not_found")
        record = self.store.version(name, version)
        if record.state == "rejected":
            raise Conflict(
                f"{record.name} version {version} was rejected ({record.reason}): it is never served"
            )
        if record.state != "ready":
            raise Conflict(
                f"{record.name} version {version} is {record.state}: only ready versions are served"
            )
        self._verify(record)
        return ResolvedModel(
            reference=reference,
            name=record.name,
            version=record.version,
            alias=alias,
            kind=record.kind,
            backend=record.backend,
            path=record.path,
            sha256=record.sha256,
            context_length=record.context_length,
            tags=record.tags,
            remote=record.remote,
        )

    def _verify(self, record: ModelVersion) -> None:
        from appliance.models.manifest import verify_file

        if record.remote is not None:
            return  # no weights here: the server's URL is checked against the policy when it opens

        path = Path(record.path)
        if not path.exists():
            _assemble_builtin(record.name, path, self.models_dir)
        weights = path / "model.safetensors" if path.is_dir() else path
        try:
            verify_file(weights, record.sha256, None, self.models_dir)
        except NotReady as exc:
            raise NotReady(
                f"{record.name} version {record.version} refused: {exc.detail}. Re-import the model "
                "(a changed file is a new version)"
            ) from None


def _slug(text: str) -> str:
    """A family name from a remote model's id (`org/Model-7B` -> `org-Model-7B`)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:128]
    return slug or "remote-model"


def _licence(header: GGUFHeader | None) -> str:
    raw = header.licence if header is not None else ""
    return LICENCE_NAMES.get(raw.lower(), raw)


def _assemble_builtin(name: str, path: Path, models_dir: Path) -> None:
    """Built-ins assembled from their part packages on first use (Qwen coder, mpnet)."""
    from appliance.models.catalog import MPNET_NAME, assemble_mpnet
    from appliance.models.manifest import QWEN_CODER, assemble_qwen_coder

    if name.lower() == QWEN_CODER.name.lower():
        assemble_qwen_coder(path.parent)
    elif name.lower() == MPNET_NAME.lower():
        assemble_mpnet(path)
    else:
        raise NotReady(f"the weights of {name} are missing: {path} does not exist")
