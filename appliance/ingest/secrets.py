"""Secret hygiene: file names never indexed, and credentials in text replaced by [REDACTED:kind]."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase

from appliance.document import Block, ParsedDocument

# File names whose content is a credential store more often than not. Matched case-insensitively
# on the base name. Content redaction would miss most of what these hold (binary key stores,
# bare values without a key name), so they are skipped whole.
SENSITIVE_NAME_PATTERNS: tuple[str, ...] = (
    ".env",  # dotenv: application secrets as KEY=value
    ".env.*",  # .env.local, .env.production; .env.example too, since copies of real ones land there
    "*.env",  # prod.env, docker-compose env files
    "*.pem",  # PEM private keys (and certificates, which are no loss)
    "*.key",  # private keys (TLS, SSH, signing)
    "*.ppk",  # PuTTY private keys
    "id_rsa*",  # SSH key pairs (the .pub halves are no secret, but no knowledge either)
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "credentials.json",  # Google OAuth and service-account credentials
    "client_secret*.json",  # Google OAuth client secrets as downloaded
    "service-account*.json",  # Google service-account keys
    "*.kdbx",  # KeePass databases
    "*.p12",  # PKCS#12 bundles: certificate plus private key
    "*.pfx",
    "*.keystore",  # Java/Android key stores
    "*.jks",
    "*.keytab",  # Kerberos keytabs: a password equivalent
    ".netrc",  # machine/login/password triples used by curl, git, ftp
    "_netrc",
    ".pgpass",  # PostgreSQL passwords
    ".htpasswd",  # web server password hashes (crackable offline)
    ".git-credentials",  # git's plain-text credential store
    ".npmrc",  # npm registry auth tokens
    ".pypirc",  # PyPI upload tokens
    ".dockercfg",  # registry auth
    ".s3cfg",  # s3cmd access and secret keys
    ".vault-token",  # HashiCorp Vault token
    "secrets.yml",  # Rails/Helm/Ansible secret files by convention
    "secrets.yaml",
    "*.tfstate",  # Terraform state stores every resource's secrets in plain text
    "*.tfstate.backup",
    "kubeconfig",  # cluster credentials
    "*.ovpn",  # OpenVPN profiles usually inline their private key
)
# Directories whose every file is a credential or a key: matched on any component of the path.
# known_hosts and authorized_keys are covered here; outside .ssh/ they are no secret.
SENSITIVE_DIRECTORIES: tuple[str, ...] = (
    ".ssh/",
    ".gnupg/",
    ".aws/",
    ".azure/",
    ".kube/",
    ".docker/",
    ".password-store/",
)


def sensitive_name(path: str, extra_patterns: Sequence[str] = ()) -> str | None:
    """The pattern that marks `path` as never to be indexed, or None.

    Patterns are globs on the base name, case-insensitive. A pattern ending in "/" names a
    directory and matches any component of the path; one with another "/" matches the whole
    path at any depth (e.g. "config/prod/*").
    """
    parts = [p for p in path.replace("\\", "/").lower().split("/") if p and p != "."]
    if not parts:
        return None
    base, whole = parts[-1], "/".join(parts)
    for pattern in (*SENSITIVE_NAME_PATTERNS, *SENSITIVE_DIRECTORIES, *extra_patterns):
        glob = pattern.lower().replace("\\", "/")
        if glob.endswith("/"):
            if any(fnmatchcase(p, glob.rstrip("/")) for p in parts):
                return pattern
        elif "/" in glob:
            glob = glob.lstrip("/")
            if fnmatchcase(whole, glob) or fnmatchcase(whole, "*/" + glob):
                return pattern
        elif fnmatchcase(base, glob):
            return pattern
    return None


# ---- content ------------------------------------------------------------------------------

# Every pattern is linear: bounded repetitions over character classes that cannot overlap the
# delimiter that follows them, so a hostile 5 MB text costs one pass per pattern, not a blow-up.
_PRIVATE_KEY = re.compile(
    r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
    r"(?:\s*[A-Za-z][\w-]{0,30}:[^\n]{0,200}\n)*"  # PEM headers: Proc-Type, DEK-Info
    r"[A-Za-z0-9+/=\s\\]{0,65536}"  # base64 body; \\ for keys inside JSON strings ("\n")
    r"(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)?"  # a truncated key goes too
)
_AWS_KEY_ID = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Za-z0-9])")
_AWS_SECRET = re.compile(
    r"(?i)(?<![A-Za-z0-9_])((?:aws_?)?secret_?access_?key|aws_?secret_?key)"
    r"([\"']?\s*(?:=>|:=|[:=])\s*[\"']?)([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)
_GITHUB = re.compile(
    r"(?<![A-Za-z0-9_])(?:gh[pousr]_[A-Za-z0-9]{36,251}|github_pat_[A-Za-z0-9_]{22,247})(?![A-Za-z0-9_])"
)
_SLACK = re.compile(r"(?<![A-Za-z0-9-])xox[abposr]-[A-Za-z0-9-]{10,250}")
_SLACK_WEBHOOK = re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9_/-]{20,200}")
_GOOGLE = re.compile(r"(?<![A-Za-z0-9_-])AIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])")
_STRIPE = re.compile(r"(?<![A-Za-z0-9_])(?:sk|rk)_live_[0-9A-Za-z]{20,247}(?![A-Za-z0-9_])")
_SK_KEY = re.compile(
    r"(?<![A-Za-z0-9_-])sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,250}(?![A-Za-z0-9_-])"
)
_JWT = re.compile(
    r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{8,4096}\.eyJ[A-Za-z0-9_-]{8,8192}\.[A-Za-z0-9_-]{0,2048}"
)
_BEARER = re.compile(r"(?i)(?<![A-Za-z0-9])(bearer\s+)([A-Za-z0-9._~+/=-]{20,2048})(?![A-Za-z0-9._~+/=-])")
_CONNECTION = re.compile(
    r"(?i)(?<![A-Za-z0-9+.-])([a-z][a-z0-9+.-]{1,30}://[^\s:/@\"'<>\[\]]{0,100}:)([^\s@/\"'<>\[\]]{1,200})(@)"
)
# The generic assignment: a secret-bearing word ending a key name, a separator, a value. The
# match starts at the word, not the key, so no identifier is scanned twice; the key's prefix
# (DB_, aws., X-API-) stays in the text untouched.
_ASSIGNMENT = re.compile(
    r"(?i)((?:pass(?:word|wd|phrase)|secret(?:[_-]?key)?|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|token|credentials?)([\"']?)\s{0,10}(?:=>|:=|[:=](?!=))\s{0,10})"
    # A bare value stops at "=" and ":" (but may end in base64 padding), so it can never run
    # over the next key's separator: that keeps the scan linear on hostile input.
    r"(?:\"([^\"\\\n]{6,300})\"|'([^'\\\n]{6,300})'"
    r"|((?:[^\s\"'`,;&=:(){}\[\]<>]|&(?![\w.-]{1,80}=)){6,300}+={0,2})(?=[\s,;&]|$))",
)
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_.-]*")  # code (user.password, None) or prose, not a secret
_PLACEHOLDER = re.compile(r"^(?:\$|\{\{|%\(|<.*>$|\[REDACTED:|[*xX•.#-]+$|[A-Z_]+$)")


def _mark(kind: str) -> str:
    return f"[REDACTED:{kind}]"


def _sk_key(m: re.Match) -> str | None:
    # sk- also starts ordinary words ("sk-learn-compatible"): a key mixes cases and digits.
    body = m.group(0)
    if any(c.isdigit() for c in body) and any(c.isupper() for c in body) and any(c.islower() for c in body):
        return _mark("openai_key")
    return None


def _bearer(m: re.Match) -> str | None:
    return m.group(1) + _mark("bearer_token") if any(c.isdigit() for c in m.group(2)) else None


def _connection(m: re.Match) -> str | None:
    if _PLACEHOLDER.match(m.group(2)):
        return None
    return m.group(1) + _mark("connection_password") + m.group(3)


def _assignment(m: re.Match) -> str | None:
    quoted = m.group(3) if m.group(3) is not None else m.group(4)
    value = quoted if quoted is not None else m.group(5)
    if _PLACEHOLDER.match(value):
        return None
    key_start = m.start()
    while key_start > 0 and (m.string[key_start - 1].isalnum() or m.string[key_start - 1] in "_.-"):
        key_start -= 1
    in_query = key_start > 0 and m.string[key_start - 1] in "?&"
    if quoted is None and not in_query and _IDENTIFIER.fullmatch(value):
        return None  # `password = user_password`, `token: None`, "Token: expired"
    key = m.group(1)
    kind = "password" if key[:4].lower() == "pass" else "secret"
    quote = '"' if m.group(3) is not None else "'" if m.group(4) is not None else ""
    return key + quote + _mark(kind) + quote


def _fixed(kind: str) -> Callable[[re.Match], str]:
    return lambda m: _mark(kind)


_RULES: tuple[tuple[str, re.Pattern, Callable[[re.Match], str | None]], ...] = (
    ("private_key", _PRIVATE_KEY, _fixed("private_key")),
    ("aws_access_key_id", _AWS_KEY_ID, _fixed("aws_access_key_id")),
    (
        "aws_secret_access_key",
        _AWS_SECRET,
        lambda m: m.group(1) + m.group(2) + _mark("aws_secret_access_key"),
    ),
    ("github_token", _GITHUB, _fixed("github_token")),
    ("slack_token", _SLACK, _fixed("slack_token")),
    ("slack_webhook", _SLACK_WEBHOOK, _fixed("slack_webhook")),
    ("google_api_key", _GOOGLE, _fixed("google_api_key")),
    ("stripe_key", _STRIPE, _fixed("stripe_key")),
    ("openai_key", _SK_KEY, _sk_key),
    ("jwt", _JWT, _fixed("jwt")),
    ("connection_password", _CONNECTION, _connection),
    ("assignment", _ASSIGNMENT, _assignment),  # after the specific kinds, so their names win
    ("bearer_token", _BEARER, _bearer),
)
# Cheap screens: a rule whose marker is absent from the text is skipped without running it.
_SCREENS: dict[str, Callable[[str], bool]] = {
    "private_key": lambda t: "PRIVATE KEY" in t,
    "aws_access_key_id": lambda t: any(p in t for p in ("AKIA", "ASIA", "ABIA", "ACCA")),
    "github_token": lambda t: any(p in t for p in ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    "aws_secret_access_key": lambda t: "ecret" in t or "ECRET" in t,
    "slack_token": lambda t: "xox" in t,
    "slack_webhook": lambda t: "hooks.slack.com" in t,
    "google_api_key": lambda t: "AIza" in t,
    "stripe_key": lambda t: "_live_" in t,
    "openai_key": lambda t: "sk-" in t,
    "jwt": lambda t: "eyJ" in t,
    "connection_password": lambda t: "://" in t,
}


def redact_secrets(text: str) -> tuple[str, dict[str, int]]:
    """`text` with every credential found replaced by [REDACTED:kind], and how many of each kind."""
    counts: dict[str, int] = {}
    for name, pattern, replace in _RULES:
        screen = _SCREENS.get(name)
        if screen is not None and not screen(text):
            continue

        def substitute(m: re.Match, replace=replace) -> str:
            out = replace(m)
            if out is None:
                return m.group(0)
            kind = out[out.index("[REDACTED:") + 10 : out.index("]", out.index("[REDACTED:"))]
            counts[kind] = counts.get(kind, 0) + 1
            return out

        text = pattern.sub(substitute, text)
    return text, counts


def redact_document(doc: ParsedDocument) -> tuple[ParsedDocument, dict[str, int]]:
    """A copy of `doc` with secrets redacted in its title, block texts, table headers, heading
    paths and string metadata; and the counts per kind over all of them."""
    counts: dict[str, int] = {}

    def clean(text: str) -> str:
        out, found = redact_secrets(text)
        for kind, n in found.items():
            counts[kind] = counts.get(kind, 0) + n
        return out

    paths: dict[tuple[str, ...], tuple[str, ...]] = {}  # blocks share heading paths: redact each once

    def clean_block(block: Block) -> Block:
        path = block.location.heading_path
        if path not in paths:
            # Not counted: a heading path repeats heading blocks, whose secrets are counted there.
            paths[path] = tuple(redact_secrets(h)[0] for h in path)
        location = block.location
        if paths[path] != path:
            location = dataclasses.replace(location, heading_path=paths[path])
        header = clean(block.header) if block.header is not None else None
        return dataclasses.replace(block, text=clean(block.text), header=header, location=location)

    blocks = [clean_block(b) for b in doc.blocks]
    metadata = {k: clean(v) if isinstance(v, str) else v for k, v in doc.metadata.items()}
    return ParsedDocument(doc.mime_type, clean(doc.title), blocks, metadata), counts
