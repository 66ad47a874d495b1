"""Source code: one block per top-level definition or blank-line separated group, with exact lines."""

from __future__ import annotations

import re
from pathlib import PurePath

from appliance.document import Block, Location, ParsedDocument

MIME = "text/x-source"

# Extension (or alias used in Markdown fences) -> canonical language name.
_LANGUAGES = {
    "py": "python", "pyi": "python", "pyw": "python", "python": "python", "python3": "python",
    "py3": "python", "pycon": "python", "ipython": "python", "ipython3": "python",
    "js": "javascript", "mjs": "javascript", "cjs": "javascript", "jsx": "javascript", "javascript": "javascript",
    "ts": "typescript", "tsx": "typescript", "mts": "typescript", "typescript": "typescript",
    "go": "go", "golang": "go", "rs": "rust", "rust": "rust", "java": "java", "kt": "kotlin", "kts": "kotlin",
    "scala": "scala", "c": "c", "h": "c", "cc": "cpp", "cpp": "cpp", "cxx": "cpp", "hpp": "cpp",
    "hh": "cpp", "hxx": "cpp", "c++": "cpp", "cs": "csharp", "csharp": "csharp", "swift": "swift",
    "m": "objective-c", "mm": "objective-c", "sh": "shell", "bash": "shell", "zsh": "shell",
    "ksh": "shell", "fish": "shell", "shell": "shell", "console": "shell", "ps1": "powershell",
    "bat": "batch", "cmd": "batch", "rb": "ruby", "ruby": "ruby", "php": "php", "pl": "perl",
    "pm": "perl", "lua": "lua", "r": "r", "jl": "julia", "dart": "dart", "zig": "zig", "nim": "nim",
    "ex": "elixir", "exs": "elixir", "erl": "erlang", "hs": "haskell", "ml": "ocaml", "fs": "fsharp",
    "clj": "clojure", "groovy": "groovy", "gradle": "groovy", "sql": "sql", "yaml": "yaml",
    "yml": "yaml", "toml": "toml", "ini": "ini", "cfg": "ini", "conf": "ini", "properties": "ini",
    "xml": "xml", "xsd": "xml", "svg": "xml", "css": "css", "scss": "scss", "less": "less",
    "vue": "vue", "svelte": "svelte", "proto": "protobuf", "graphql": "graphql", "gql": "graphql",
    "tf": "hcl", "hcl": "hcl", "cmake": "cmake", "mk": "make", "make": "make", "makefile": "make",
    "dockerfile": "dockerfile", "nix": "nix", "vim": "vim", "el": "elisp", "lisp": "lisp", "scm": "scheme",
}  # fmt: skip
_FILENAMES = {
    "makefile": "make", "gnumakefile": "make", "dockerfile": "dockerfile", "containerfile": "dockerfile",
    "cmakelists.txt": "cmake", "jenkinsfile": "groovy", "gemfile": "ruby", "rakefile": "ruby",
    "vagrantfile": "ruby", "justfile": "make", ".bashrc": "shell", ".profile": "shell", ".zshrc": "shell",
}  # fmt: skip
_SHEBANG_LANG = {"python": "python", "node": "javascript", "bash": "shell", "sh": "shell", "zsh": "shell",
                 "ruby": "ruby", "perl": "perl", "php": "php", "deno": "typescript", "pwsh": "powershell"}  # fmt: skip
# A blank line followed by one of these at column 0 closes a construct rather than starting one.
_CLOSER = re.compile(r"^(?:[})\]]|</|#(?:endif|else|elif)\b|(?:end|fi|done|esac)\b)")


def normalise_language(tag: str | None) -> str | None:
    tag = (tag or "").strip().lower().lstrip(".").strip("{}")
    if tag in ("", "default", "none", "text", "plain", "plaintext", "txt"):
        return None
    return _LANGUAGES.get(tag, tag)


def language_for(filename: str | None, text: str = "") -> str | None:
    """The language of a source file from its name, or from its shebang line."""
    if filename:
        p = PurePath(filename.replace("\\", "/"))
        if p.name.lower() in _FILENAMES:
            return _FILENAMES[p.name.lower()]
        if p.suffix and p.suffix[1:].lower() in _LANGUAGES:
            return _LANGUAGES[p.suffix[1:].lower()]
    if text.startswith("#!"):
        words = [w for w in text[2:].split("\n", 1)[0].split() if not w.startswith("-")]
        if words and words[0].rsplit("/", 1)[-1] == "env":
            words = words[1:]
        if words:
            return _SHEBANG_LANG.get(words[0].rsplit("/", 1)[-1].lower().rstrip("0123456789."))
    return None


def groups(lines: list[str]) -> list[tuple[int, int]]:
    """0-based inclusive line ranges of top-level units.

    A new unit starts after a blank line at a line with no indentation: in nearly every
    language that is where top-level definitions (with their decorators and leading
    comments) begin, while blank lines inside a body are followed by indented lines.
    """
    out: list[tuple[int, int]] = []
    start: int | None = None
    last = -1
    blank_before = False
    for i, line in enumerate(lines):
        if not line.strip():
            blank_before = True
            continue
        top = line[:1] not in (" ", "\t") and not _CLOSER.match(line)
        if start is None:
            start = i
        elif blank_before and top:
            out.append((start, last))
            start = i
        last = i
        blank_before = False
    if start is not None:
        out.append((start, last))
    return out


def parse(text: str, name: str, filename: str | None = None) -> ParsedDocument:
    lines = [x.rstrip() for x in text.split("\n")]
    language = language_for(filename, text)
    blocks = [
        Block(
            "code", "\n".join(lines[a : b + 1]), Location(line_start=a + 1, line_end=b + 1), language=language
        )
        for a, b in groups(lines)
    ]
    return ParsedDocument(MIME, "", blocks, metadata={"language": language} if language else {})
