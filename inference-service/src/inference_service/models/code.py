"""Schemas of ``POST /code/analyze``: the request, the static facts and the model's review.

``Review`` doubles as the JSON schema handed to Ollama's ``format`` option
(``Review.model_json_schema()``), so its fields are what the model is asked to produce.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_REVIEW_MODEL = "qwen2.5-coder:1.5b"

Language = Literal[
    "python",
    "javascript",
    "typescript",
    "go",
    "rust",
    "java",
    "c",
    "cpp",
    "csharp",
    "ruby",
    "php",
    "kotlin",
    "swift",
    "shell",
    "text",
]

#: Other spellings a client may send for ``language`` (matched case-insensitively).
LANGUAGE_ALIASES: dict[str, str] = {
    "py": "python",
    "python3": "python",
    "js": "javascript",
    "node": "javascript",
    "ts": "typescript",
    "golang": "go",
    "rs": "rust",
    "c++": "cpp",
    "cxx": "cpp",
    "c#": "csharp",
    "cs": "csharp",
    "rb": "ruby",
    "kt": "kotlin",
    "sh": "shell",
    "bash": "shell",
    "zsh": "shell",
    "plaintext": "text",
}


class CodeAnalysisRequest(BaseModel):
    """Body of ``POST /code/analyze``."""

    model_config = ConfigDict(extra="forbid")

    code: str = Field(
        description="The source to analyse; at most 200 KB of UTF-8 by default (configurable), "
        "larger → 413. Empty or whitespace-only → 422.",
        examples=["def f(x):\n    return x\n"],
    )
    language: Language | None = Field(
        default=None,
        description="Source language; when absent it is taken from the filename's "
        "extension, else guessed from the code. Common aliases (py, js, ts, c++, …) accepted.",
    )
    filename: str | None = Field(default=None, max_length=255, examples=["app/main.py"])
    model: str = Field(
        default=DEFAULT_REVIEW_MODEL, min_length=1, max_length=200, description="Review model."
    )
    review: bool = Field(default=True, description="Ask the model for a review.")

    @field_validator("code")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("code is empty")
        return value

    @field_validator("language", mode="before")
    @classmethod
    def _normalise_language(cls, value: object) -> object:
        if isinstance(value, str):
            lowered = value.strip().lower()
            return LANGUAGE_ALIASES.get(lowered, lowered)
        return value


class LineCounts(BaseModel):
    """Physical-line metrics. ``code + comment + blank == total``."""

    total: int = Field(description="Lines in the file (a final newline does not add one).")
    code: int = Field(description="Lines with any code (a trailing comment does not matter).")
    comment: int = Field(description="Lines holding only comment text.")
    blank: int = Field(description="Whitespace-only lines outside strings and comments.")
    longest: int = Field(description="Characters in the longest line.")


class SyntaxErrorFacts(BaseModel):
    """Where Python's parser gave up (1-based line and column, as CPython reports them)."""

    message: str
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None


class FunctionFacts(BaseModel):
    """A ``def`` or ``async def``, at any depth."""

    name: str
    qualname: str = Field(description="Dotted path through enclosing classes and functions.")
    lineno: int = Field(description="Line of the ``def`` keyword (decorators sit above it).")
    end_lineno: int
    is_async: bool
    is_method: bool = Field(description="Defined directly in a class body.")
    decorators: list[str] = Field(description="Decorator expressions as source text.")
    arguments: int = Field(description="All parameters, including self/cls, *args, **kwargs.")
    complexity: int = Field(description="Cyclomatic complexity estimate (docs/code-analysis.md).")


class ClassFacts(BaseModel):
    """A ``class`` statement, at any depth."""

    name: str
    qualname: str
    lineno: int
    end_lineno: int
    decorators: list[str]
    bases: list[str]
    methods: int = Field(description="Functions defined directly in the class body.")


class FromImportFacts(BaseModel):
    """One ``from X import a, b``; relative imports keep their dots (``..pkg``, ``.``)."""

    module: str
    names: list[str]
    line: int


class ImportFacts(BaseModel):
    """Everything imported, anywhere in the file."""

    modules: list[str] = Field(default_factory=list, description="``import x.y`` → ``x.y``.")
    from_imports: list[FromImportFacts] = Field(default_factory=list)


class PythonFacts(BaseModel):
    """Static facts about Python source, from ``ast`` and ``tokenize``.

    When the code does not parse, ``syntax_error`` is set and the AST-derived lists are empty.
    """

    analyzer: Literal["python-ast"] = "python-ast"
    lines: LineCounts
    syntax_error: SyntaxErrorFacts | None = None
    functions: list[FunctionFacts] = Field(default_factory=list)
    classes: list[ClassFacts] = Field(default_factory=list)
    imports: ImportFacts = Field(default_factory=ImportFacts)


class MetricsFacts(BaseModel):
    """Line metrics for languages without a parser here; the function count is a regex guess."""

    analyzer: Literal["line-metrics"] = "line-metrics"
    lines: LineCounts
    function_count_estimate: int | None = Field(
        description="Crude count of function definitions by per-language regexes; "
        "null for plain text."
    )


StaticFacts = Annotated[PythonFacts | MetricsFacts, Field(discriminator="analyzer")]

Severity = Literal["info", "warning", "error"]


class Finding(BaseModel):
    """One issue the model points at."""

    line: int = Field(description="1-based line number in the listing.")
    severity: Severity
    message: str


class Review(BaseModel):
    """The model's review; its JSON schema is Ollama's ``format`` for the review call."""

    summary: str
    findings: list[Finding]
    suggestions: list[str]


class CodeAnalysis(BaseModel):
    """Response of ``POST /code/analyze``."""

    language: Language
    static: StaticFacts
    review: Review | None = Field(
        default=None, description="Null when not asked for, or when it failed (see review_error)."
    )
    review_error: str | None = Field(
        default=None, description="Why ``review`` is null although a review was asked for."
    )
    model: str | None = Field(default=None, description="The model asked for the review.")
