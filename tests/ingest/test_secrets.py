"""Secret hygiene: sensitive file names, redaction of each credential kind, and prose and code left alone."""

from __future__ import annotations

import time

import pytest

from appliance.document import Block, Location, ParsedDocument
from appliance.ingest.secrets import (
    SENSITIVE_NAME_PATTERNS,
    redact_document,
    redact_secrets,
    sensitive_name,
)

# Test credentials are assembled from pieces so this file itself does not trip secret scanners.
GITHUB = "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8"
GITHUB_FINE = "github_pat_" + "11ABCDEFG0" * 3 + "_" + "xYz9" * 10
SLACK = "xoxb-" + "123456789012-1234567890123-" + "AbCdEfGhIjKlMnOpQrStUvWx"
GOOGLE = "AIza" + "SyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
STRIPE = "sk_" + "live_" + "51H8xYzAbCdEfGhIjKlMnOpQr"
OPENAI = "sk-" + "proj-" + "Xy7Qa9Lm2Np4Rs6Tu8Vw0XyZ1aB3cD5eF7gH9iJ"
AWS_ID = "AKIA" + "IOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCY" + "EXAMPLEKEY"
JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"
    ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIn0"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)
PEM_BODY = "MIIEowIBAAKCAQEA7bq98l6nVYDOJ5sO\nd9zPQ0bq0pTq9d2vMAsRwX1ZvU0o=\n"


def pem(label: str, headers: str = "") -> str:
    return f"-----BEGIN {label}-----\n{headers}{PEM_BODY}-----END {label}-----"


# ---- file names -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "pattern"),
    [
        (".env", ".env"),
        ("app/.env.production", ".env.*"),
        ("deploy/prod.env", "*.env"),
        ("certs/Server.PEM", "*.pem"),
        ("tls/site.key", "*.key"),
        ("home/ada/id_rsa", "id_rsa*"),
        ("backup/id_ed25519.pub", "id_ed25519*"),
        ("gcp/credentials.json", "credentials.json"),
        ("vault.kdbx", "*.kdbx"),
        ("cert.p12", "*.p12"),
        (".netrc", ".netrc"),
        (".pgpass", ".pgpass"),
        ("web/.htpasswd", ".htpasswd"),
        ("android/release.keystore", "*.keystore"),
        ("config/secrets.yml", "secrets.yml"),
        ("infra/terraform.tfstate", "*.tfstate"),
        ("home/ada/.ssh/config", ".ssh/"),
        ("home/ada/.ssh/known_hosts", ".ssh/"),
        ("repo\\.aws\\credentials", ".aws/"),
        ("x/.GnuPG/pubring.kbx", ".gnupg/"),
    ],
)
def test_sensitive_names(path, pattern):
    assert sensitive_name(path) == pattern


@pytest.mark.parametrize(
    "path",
    ["README.md", "docs/environment.md", "src/key.py", "keys/rotation-policy.md", "monkey.txt",
     ".envrc.md", "credentials-guide.md", "ssh/setup.md", "notes/known_hosts.md", "sec/pem.txt"],
)  # fmt: skip
def test_ordinary_names_are_not_sensitive(path):
    assert sensitive_name(path) is None


def test_extra_patterns_name_globs_directories_and_paths():
    assert sensitive_name("reports/Q3-SALARIES.xlsx", ["*salaries*"]) == "*salaries*"
    assert sensitive_name("a/private/b/notes.md", ["private/"]) == "private/"
    assert sensitive_name("config/prod/app.yml", ["config/prod/*"]) == "config/prod/*"
    assert sensitive_name("x/config/prod/app.yml", ["config/prod/*"]) == "config/prod/*"
    assert sensitive_name("config/dev/app.yml", ["config/prod/*", "private/"]) is None
    assert ".env" in SENSITIVE_NAME_PATTERNS and "*.pem" in SENSITIVE_NAME_PATTERNS


# ---- redaction: each kind -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected", "kind"),
    [
        (pem("RSA PRIVATE KEY") + "\nafter", "[REDACTED:private_key]\nafter", "private_key"),
        ("a\n" + pem("OPENSSH PRIVATE KEY"), "a\n[REDACTED:private_key]", "private_key"),
        (pem("EC PRIVATE KEY"), "[REDACTED:private_key]", "private_key"),
        (pem("ENCRYPTED PRIVATE KEY"), "[REDACTED:private_key]", "private_key"),
        (pem("PGP PRIVATE KEY BLOCK"), "[REDACTED:private_key]", "private_key"),
        (
            pem("RSA PRIVATE KEY", "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,3F17F5316E2BAC89\n\n"),
            "[REDACTED:private_key]",
            "private_key",
        ),
        (  # inside a JSON string, as in a service-account file
            '{"private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n'
            '-----END PRIVATE KEY-----\\n", "id": 1}',
            '{"private_key": "[REDACTED:private_key]\\n", "id": 1}',
            "private_key",
        ),
        (  # truncated: no END line, the body still goes
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq98l6nVYDOJ5sO\n",
            "[REDACTED:private_key]",
            "private_key",
        ),
        (f"id: {AWS_ID}.", "id: [REDACTED:aws_access_key_id].", "aws_access_key_id"),
        ("ASIA" + "Y34FZKBOKMUTVV7A", "[REDACTED:aws_access_key_id]", "aws_access_key_id"),
        (
            f"aws_secret_access_key = {AWS_SECRET}\n",
            "aws_secret_access_key = [REDACTED:aws_secret_access_key]\n",
            "aws_secret_access_key",
        ),
        (
            f'"SecretAccessKey": "{AWS_SECRET}"',
            '"SecretAccessKey": "[REDACTED:aws_secret_access_key]"',
            "aws_secret_access_key",
        ),
        (f"git clone https://{GITHUB}@github.com/o/r", "git clone https://[REDACTED:github_token]@github.com/o/r",
         "github_token"),
        (f"token {GITHUB_FINE}", "token [REDACTED:github_token]", "github_token"),
        (f"SLACK={SLACK}", "SLACK=[REDACTED:slack_token]", "slack_token"),
        (f"key={GOOGLE}&q=1", "key=[REDACTED:google_api_key]&q=1", "google_api_key"),
        (f"stripe.api_key = '{STRIPE}'", "stripe.api_key = '[REDACTED:stripe_key]'", "stripe_key"),
        (f"OPENAI_API_KEY={OPENAI}", "OPENAI_API_KEY=[REDACTED:openai_key]", "openai_key"),
        (f"Cookie: session={JWT}; Path=/", "Cookie: session=[REDACTED:jwt]; Path=/", "jwt"),
        (
            "Authorization: Bearer 4f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c",
            "Authorization: Bearer [REDACTED:bearer_token]",
            "bearer_token",
        ),
        ('password = "hunter2!x"', 'password = "[REDACTED:password]"', "password"),
        ("DB_PASSWORD=S3cure-pass\n", "DB_PASSWORD=[REDACTED:password]\n", "password"),
        ("  passwd: Tr0ub4dor&3\n", "  passwd: [REDACTED:password]\n", "password"),
        ('{"password": "correct horse battery staple"}', '{"password": "[REDACTED:password]"}', "password"),
        ("client_secret: 'a8f7d6e5c4b3a291'", "client_secret: '[REDACTED:secret]'", "secret"),
        ('SECRET_KEY = "django-insecure-9x!k2"', 'SECRET_KEY = "[REDACTED:secret]"', "secret"),
        ("X-API-Key: 9f8e7d6c5b4a3210", "X-API-Key: [REDACTED:secret]", "secret"),
        ("$api_key => 'f00dfeed1234';", "$api_key => '[REDACTED:secret]';", "secret"),
        ("GET /cb?token=abcdefgh&x=1", "GET /cb?token=[REDACTED:secret]&x=1", "secret"),
        (
            "postgres://app:hunter2@db.internal:5432/app",
            "postgres://app:[REDACTED:connection_password]@db.internal:5432/app",
            "connection_password",
        ),
        ("redis://:s3cret99@cache:6379/0", "redis://:[REDACTED:connection_password]@cache:6379/0",
         "connection_password"),
        ("mongodb+srv://admin:p%40ss@c0.mongodb.net", "mongodb+srv://admin:[REDACTED:connection_password]@c0.mongodb.net",
         "connection_password"),
    ],
)  # fmt: skip
def test_each_kind_is_redacted(text, expected, kind):
    out, counts = redact_secrets(text)
    assert out == expected
    assert counts == {kind: 1}


@pytest.mark.parametrize(
    "text",
    [
        "The password policy requires 12 characters and a symbol.",
        "password = get_password()",
        "token = None",
        "password = user.password",
        'password = os.environ["DB_PASSWORD"]',
        "if token == 'abc123xyz':",
        "if (password !== confirmation) return;",
        'password_prompt = "Enter your password: "',
        "max_tokens = 4096",
        "num_tokens: 128000",
        "Password: the one you chose at sign-up",
        "Token: expired",
        "password: string  # the user's password",
        'password = ""',
        'api_key = "YOUR_API_KEY"',
        'password = "<your password>"',
        "secret: ${SECRET_VALUE}",
        "token: {{ .Values.token }}",
        "password = '********'",
        "https://example.com:8080/path?page=2",
        "mongodb+srv://admin:${MONGO_PW}@cluster0.example.net",
        "pip install scikit-learn  # sk-learn-compatible-estimators-in-python",
        "AKIA is the prefix of an AWS access key id",
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----",
        "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYI\n-----END PUBLIC KEY-----",
        'curl -H "Authorization: Bearer $(cat var/admin.key)" http://127.0.0.1:8080',
        "Bearer tokens are described in RFC 6750.",
        "ghp_ is GitHub's prefix for personal access tokens",
        "eyJ is how base64-encoded JSON begins",
        "def tokenize(text): return text.split()",
    ],
)
def test_prose_and_code_stay_intact(text):
    assert redact_secrets(text) == (text, {})


def test_counts_add_up_across_kinds():
    text = f"{AWS_ID} {AWS_ID}\npassword = 'hunter2!x'\n{GITHUB}\n"
    out, counts = redact_secrets(text)
    assert counts == {"aws_access_key_id": 2, "password": 1, "github_token": 1}
    assert AWS_ID not in out and GITHUB not in out and "hunter2" not in out


def test_a_token_in_an_assignment_is_named_by_its_kind():
    out, counts = redact_secrets(f"GITHUB_TOKEN={GITHUB}\n")
    assert out == "GITHUB_TOKEN=[REDACTED:github_token]\n"
    assert counts == {"github_token": 1}


@pytest.mark.parametrize(
    "unit",
    [
        "The password policy requires 12 characters; set token = None, call get_password(). "
        "See https://example.com/docs?page=2 and sk-learn. def f(x): return x + 1\n",
        "password=",
        "password:x!",
        "-----BEGIN RSA PRIVATE KEY-----\n",
        "postgres://u:",
        "eyJabcdefghij.",
        "a",
    ],
    ids=["prose", "assignments", "colon-runs", "pem-begins", "urls", "jwt-prefixes", "one-letter"],
)
def test_five_megabytes_of_hostile_text_take_linear_time(unit):
    text = unit * ((5 << 20) // len(unit))
    started = time.monotonic()
    out, _ = redact_secrets(text)
    # About a second on a busy 2-core machine; backtracking blow-ups take minutes.
    assert time.monotonic() - started < 15
    assert len(out) > 0


# ---- documents ------------------------------------------------------------------------------


def test_redact_document_cleans_title_text_headers_headings_and_metadata():
    doc = ParsedDocument(
        "text/markdown",
        f"Deploy notes {AWS_ID}",
        [
            Block("heading", "password = 'hunter2!x'", Location(heading_path=("password = 'hunter2!x'",))),
            Block(
                "paragraph",
                f"Use {GITHUB} to push.",
                Location(heading_path=("password = 'hunter2!x'",), line_start=3),
            ),
            Block("table", f"name: ci | token: {SLACK}", Location(line_start=5), header=f"name | {GOOGLE}"),
            Block("code", "print('nothing secret here')", Location(line_start=9), language="python"),
        ],
        {"author": f"ops {AWS_ID}", "page_count": 2},
    )
    clean, counts = redact_document(doc)
    assert clean.title == "Deploy notes [REDACTED:aws_access_key_id]"
    assert clean.blocks[0].text == "password = '[REDACTED:password]'"
    assert clean.blocks[1].text == "Use [REDACTED:github_token] to push."
    assert clean.blocks[1].location == Location(
        heading_path=("password = '[REDACTED:password]'",), line_start=3
    )
    assert clean.blocks[2].text == "name: ci | token: [REDACTED:slack_token]"
    assert clean.blocks[2].header == "name | [REDACTED:google_api_key]"
    assert clean.blocks[3] == doc.blocks[3]
    assert clean.metadata == {"author": "ops [REDACTED:aws_access_key_id]", "page_count": 2}
    assert counts == {
        "aws_access_key_id": 2, "password": 1, "github_token": 1, "slack_token": 1, "google_api_key": 1,
    }  # fmt: skip
    assert doc.blocks[1].text == f"Use {GITHUB} to push."  # the input is not modified


def test_redact_document_without_secrets_is_unchanged():
    doc = ParsedDocument("text/plain", "Travel policy", [Block("paragraph", "Per diems apply in Europe.")])
    clean, counts = redact_document(doc)
    assert clean == doc and counts == {}
