"""The names that become identifiers, folder names and index keys: one rule per kind, matched whole.

Matched with `fullmatch`, never `match` with `$`: `$` also matches before a trailing newline, and
a name like "abc\n" must be refused, not stored as a folder or a key.
"""

from __future__ import annotations

import re

from appliance.errors import InvalidInput

NAME_MAX = 64
# A collection is a key of every index, a drop-folder folder and a metadata filter value.
COLLECTION_NAME = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{NAME_MAX - 1}}}")
SOURCE_NAME = re.compile(rf"[a-z0-9][a-z0-9_.-]{{0,{NAME_MAX - 1}}}")
# A folder under <data dir>/backups/.
BACKUP_NAME = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{NAME_MAX - 1}}}")


def is_collection_name(name: object) -> bool:
    return isinstance(name, str) and COLLECTION_NAME.fullmatch(name) is not None


def check_collection_name(name: object) -> str:
    if not is_collection_name(name):
        raise InvalidInput(
            f"invalid collection name {name!r}: use 1-{NAME_MAX} characters a-z, 0-9, '_' or '-', "
            "starting with a letter or digit"
        )
    return name  # type: ignore[return-value]


def check_source_name(name: object) -> str:
    if not isinstance(name, str) or SOURCE_NAME.fullmatch(name) is None:
        raise InvalidInput(
            f"invalid source name {name!r}: use 1-{NAME_MAX} characters a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_backup_name(name: object) -> str:
    if not isinstance(name, str) or BACKUP_NAME.fullmatch(name) is None:
        raise InvalidInput(
            f"invalid backup name {name!r}: use 1-{NAME_MAX} characters A-Z, a-z, 0-9, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name
