"""What the analyser knows about each language: comment markers, function regexes, detection.

Detection order (:func:`detect_language`): the ``language`` the client sent, else the
filename's extension, else a shebang line, else a score of per-language hint regexes over the
first :data:`DETECTION_SAMPLE_CHARS` characters (ties go to the language listed first in
:data:`_HINTS`); no hint at all → ``text``.

Every regex here works on one line at a time and uses ``[ \\t]`` rather than ``\\s``, so no
pattern can run across lines: matching stays linear in the size of the code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from inference_service.models.code import Language

DETECTION_SAMPLE_CHARS = 20_000

_C_COMMENTS = (("//",), (("/*", "*/"),))


@dataclass(frozen=True)
class LanguageSpec:
    """Comment syntax and function-definition regexes of one language."""

    line_comments: tuple[str, ...] = ()
    block_comments: tuple[tuple[str, str], ...] = ()
    function_patterns: tuple[re.Pattern[str], ...] = ()


def _patterns(*sources: str) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(source) for source in sources)


_JS_FUNCTIONS = _patterns(
    # function declarations and expressions, generators included
    r"\bfunction\b[ \t]*\*?[ \t]*[\w$]*[ \t]*\(",
    # arrow functions: `(a, b) =>`, `x =>` (TypeScript function *types* match too)
    r"(?:\([^()\n]*\)|(?<![\w$])[\w$]+)[ \t]*(?::[ \t]*[\w$<>\[\]|. ]+)?[ \t]*=>",
    # class/object methods: `name(args) {` at the start of a line, keywords excluded
    r"^[ \t]*(?:(?:public|private|protected|static|async|get|set|readonly|override|abstract)"
    r"[ \t]+)*(?!(?:if|for|while|switch|catch|return|function|else|do|with|new|typeof)\b)"
    r"[\w$]+[ \t]*(?:<[^<>\n]*>)?[ \t]*\([^()\n]*\)[ \t]*(?::[ \t]*[^{;\n]+)?\{",
)
_JVM_METHOD = (
    r"^[ \t]*(?:(?:public|private|protected|internal|static|final|abstract|synchronized|"
    r"native|virtual|override|async|sealed|extern|unsafe|default|partial)[ \t]+)*"
    r"(?:<[^<>\n]+>[ \t]+)?"
    r"(?!(?:if|for|foreach|while|switch|catch|return|new|else|do|try|using|lock|throw)\b)"
    r"[\w<>\[\],.?]+[ \t]+(?!(?:if|for|while|switch|catch)\b)\w+[ \t]*\([^;{}\n]*\)"
    r"[ \t]*(?:throws[ \t]+[\w., \t]+)?[ \t]*(?:\{.*)?$"
)
_C_FUNCTION = (
    r"^(?![ \t]*(?:if|for|while|switch|return|else|do|case|sizeof|typedef)\b)"
    r"[ \t]*(?:[\w:*&<>,~]+[ \t]+)+[*&]*[\w:~]+[ \t]*\([^;{}\n]*\)[ \t]*"
    r"(?:const[ \t]*)?(?:noexcept[ \t]*)?(?:override[ \t]*)?(?:\{.*)?$"
)

SPECS: dict[Language, LanguageSpec] = {
    "python": LanguageSpec(("#",), (), _patterns(r"^[ \t]*(?:async[ \t]+)?def[ \t]")),
    "javascript": LanguageSpec(*_C_COMMENTS, _JS_FUNCTIONS),
    "typescript": LanguageSpec(*_C_COMMENTS, _JS_FUNCTIONS),
    "go": LanguageSpec(*_C_COMMENTS, _patterns(r"^[ \t]*func\b")),
    "rust": LanguageSpec(*_C_COMMENTS, _patterns(r"\bfn[ \t]+\w+")),
    "java": LanguageSpec(*_C_COMMENTS, _patterns(_JVM_METHOD)),
    "csharp": LanguageSpec(*_C_COMMENTS, _patterns(_JVM_METHOD)),
    "c": LanguageSpec(*_C_COMMENTS, _patterns(_C_FUNCTION)),
    "cpp": LanguageSpec(*_C_COMMENTS, _patterns(_C_FUNCTION)),
    "kotlin": LanguageSpec(*_C_COMMENTS, _patterns(r"\bfun\b")),
    "swift": LanguageSpec(*_C_COMMENTS, _patterns(r"\bfunc\b")),
    "php": LanguageSpec(
        ("//", "#"), (("/*", "*/"),), _patterns(r"\bfunction\b[ \t]*&?[ \t]*\w*[ \t]*\(")
    ),
    "ruby": LanguageSpec(("#",), (("=begin", "=end"),), _patterns(r"^[ \t]*def[ \t]")),
    "shell": LanguageSpec(
        ("#",), (), _patterns(r"^[ \t]*(?:function[ \t]+[\w-]+|[\w-]+[ \t]*\([ \t]*\))")
    ),
    "text": LanguageSpec(),
}

EXTENSIONS: dict[str, Language] = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript", ".cts": "typescript",
    ".go": "go", ".rs": "rust", ".java": "java", ".cs": "csharp",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".kt": "kotlin", ".kts": "kotlin", ".swift": "swift", ".php": "php", ".rb": "ruby",
    ".sh": "shell", ".bash": "shell", ".zsh": "shell",
    ".txt": "text", ".md": "text",
}  # fmt: skip

_SHEBANGS: tuple[tuple[str, Language], ...] = (
    ("python", "python"),
    ("node", "javascript"),
    ("deno", "typescript"),
    ("ruby", "ruby"),
    ("php", "php"),
    ("bash", "shell"),
    ("zsh", "shell"),
    ("sh", "shell"),
)

# Per-language hints: each matching line adds one point. Order breaks ties.
_HINTS: dict[Language, tuple[re.Pattern[str], ...]] = {
    "python": _patterns(
        r"^[ \t]*(?:async[ \t]+)?def[ \t]+\w+[ \t]*\(.*\)[ \t]*(?:->.*)?:[ \t]*$",
        r"^[ \t]*from[ \t]+[\w.]+[ \t]+import[ \t]",
        r"^import[ \t]+[\w.]+(?:[ \t]+as[ \t]+\w+)?[ \t]*$",
        r"^[ \t]*class[ \t]+\w+(?:\(.*\))?[ \t]*:[ \t]*$",
        r"^[ \t]*(?:elif|except|with)\b.*:[ \t]*$",
        r"\bself\.",
        r"^[ \t]*@\w+",
    ),
    "typescript": _patterns(
        r"^[ \t]*(?:export[ \t]+)?(?:interface|type|enum)[ \t]+\w+",
        r":[ \t]*(?:string|number|boolean|void|unknown|any)\b",
        r"^[ \t]*import[ \t]+(?:type[ \t]+)?\{?.*\}?[ \t]*from[ \t]+['\"]",
    ),
    "javascript": _patterns(
        r"^[ \t]*(?:const|let|var)[ \t]+[\w${}\[\], ]+=",
        r"\bfunction\b",
        r"=>",
        r"\bconsole\.\w+\(",
        r"\brequire\(['\"]",
        r"^[ \t]*(?:module\.)?exports\b",
    ),
    "go": _patterns(
        r"^package[ \t]+\w+",
        r"^func[ \t]",
        r":=",
        r"\bfmt\.\w+\(",
        r"\bif[ \t]+err[ \t]*!=[ \t]*nil\b",
    ),
    "rust": _patterns(
        r"^[ \t]*(?:pub(?:\(\w+\))?[ \t]+)?fn[ \t]+\w+",
        r"\blet[ \t]+mut\b",
        r"^[ \t]*(?:use|mod|impl|trait)\b",
        r"\w+!\(",
        r"&mut\b",
    ),
    "java": _patterns(
        r"^[ \t]*(?:public|private|protected)[ \t]+(?:static[ \t]+)?(?:final[ \t]+)?"
        r"(?:class|interface|void|[A-Z]\w*)\b",
        r"\bSystem\.out\.",
        r"^import[ \t]+java\.",
        r"^package[ \t]+[\w.]+;",
        r"@Override\b",
    ),
    "csharp": _patterns(
        r"^using[ \t]+System",
        r"^[ \t]*namespace[ \t]+[\w.]+",
        r"\bConsole\.Write",
        r"\{[ \t]*get;",
    ),
    "cpp": _patterns(r"\bstd::", r"^[ \t]*#include[ \t]*<\w+>", r"\btemplate[ \t]*<", r"\bcout\b"),
    "c": _patterns(r"^[ \t]*#include[ \t]*<\w+\.h>", r"\bprintf\(", r"\bmalloc\("),
    "kotlin": _patterns(r"\bfun[ \t]+\w+", r"^[ \t]*val[ \t]+\w+", r"\bprintln\("),
    "swift": _patterns(r"\bfunc[ \t]+\w+", r"^import[ \t]+(?:Foundation|UIKit|SwiftUI)"),
    "ruby": _patterns(r"^[ \t]*end[ \t]*$", r"^[ \t]*def[ \t]+\w+[?!]?[ \t]*$", r"\bputs\b"),
    "php": _patterns(r"<\?php", r"\$\w+[ \t]*="),
    "shell": _patterns(r"^[ \t]*(?:echo|export|fi|done|esac)\b", r"\$\{?\w+\}?"),
}


def language_from_filename(filename: str | None) -> Language | None:
    """The language an extension stands for (``Dockerfile`` and friends → None)."""
    if not filename:
        return None
    return EXTENSIONS.get(PurePosixPath(filename.replace("\\", "/")).suffix.lower())


def guess_language(code: str) -> Language:
    """Best guess from a shebang, else from hint regexes; ``text`` when nothing matches."""
    sample = code[:DETECTION_SAMPLE_CHARS]
    first = sample.lstrip().split("\n", 1)[0]
    if first.startswith("#!"):
        for needle, language in _SHEBANGS:
            if needle in first:
                return language
    lines = sample.split("\n")
    best: Language = "text"
    best_score = 0
    for language, hints in _HINTS.items():
        score = sum(1 for line in lines for hint in hints if hint.search(line))
        if score > best_score:
            best, best_score = language, score
    return best


def detect_language(code: str, language: Language | None, filename: str | None) -> Language:
    """Declared language, else the filename's extension, else :func:`guess_language`."""
    if language is not None:
        return language
    return language_from_filename(filename) or guess_language(code)
