"""Unit tests of services/code_analysis*: static facts, language detection, the reviewer."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from inference_service.models.code import CodeAnalysisRequest, MetricsFacts, PythonFacts, Review
from inference_service.services.code_analysis import (
    INVALID_REVIEW_ERROR,
    NO_BACKEND_ERROR,
    CodeAnalysisService,
    CodeReviewer,
    analyze_static,
)
from inference_service.services.code_analysis_languages import detect_language, guess_language
from inference_service.services.code_analysis_prompt import numbered_listing
from ollama_sim import SimConfig, create_app
from switchboard_common import BadGateway, PayloadTooLarge

# ---------------------------------------------------------------- Python: structure

STRUCTURE = '''\
import os
import os.path as osp, sys
from . import sibling
from ..pkg.mod import a, b as c


@decorator
@app.get("/x")
async def handler(request, *args, key=None, **kwargs):
    """Docstring."""
    if request and key or args:
        return 1
    elif key:
        pass

    def inner(a, /, b):
        return a if b else None

    class Local:
        def m(self):
            return lambda q: q or 1

    return inner


class Outer(Base, metaclass=Meta):
    @staticmethod
    def s():
        pass

    class Inner:
        async def deep(self, x):
            for y in x:
                yield y
'''


def python_facts(code: str) -> PythonFacts:
    facts = analyze_static(code, "python")
    assert isinstance(facts, PythonFacts)
    return facts


def test_python_functions_have_exact_spans_and_shape() -> None:
    facts = python_facts(STRUCTURE)
    assert facts.syntax_error is None
    summary = [
        (f.qualname, f.lineno, f.end_lineno, f.is_async, f.is_method, f.arguments, f.complexity)
        for f in facts.functions
    ]
    assert summary == [
        ("handler", 9, 23, True, False, 4, 5),  # if, `and`, `or`, elif; inner/Local excluded
        ("handler.inner", 16, 17, False, False, 2, 2),
        ("handler.Local.m", 20, 21, False, True, 1, 2),  # the lambda's `or` counts here
        ("Outer.s", 28, 29, False, True, 0, 1),
        ("Outer.Inner.deep", 32, 34, True, True, 2, 2),
    ]
    assert facts.functions[0].decorators == ["decorator", "app.get('/x')"]
    assert facts.functions[3].decorators == ["staticmethod"]


def test_python_classes_and_imports() -> None:
    facts = python_facts(STRUCTURE)
    assert [(c.qualname, c.lineno, c.end_lineno, c.bases, c.methods) for c in facts.classes] == [
        ("handler.Local", 19, 21, [], 1),
        ("Outer", 26, 34, ["Base"], 1),
        ("Outer.Inner", 31, 34, [], 1),
    ]
    assert facts.imports.modules == ["os", "os.path", "sys"]
    assert [(i.module, i.names, i.line) for i in facts.imports.from_imports] == [
        (".", ["sibling"], 3),
        ("..pkg.mod", ["a", "b"], 4),
    ]


def body(lines: str) -> str:
    """``def f(x, y):`` with ``lines`` (``|``-separated) as its body."""
    return "def f(x, y):\n" + "".join(f"    {line}\n" for line in lines.split("|"))


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param(body("return x"), 1, id="straight-line"),
        pytest.param(body("if x:|  pass|elif y:|  pass|else:|  pass"), 3, id="if-elif-else"),
        pytest.param(body("for i in x:|  pass|else:|  pass"), 2, id="for-else"),
        pytest.param(body("while x:|  pass"), 2, id="while"),
        pytest.param(
            body("try:|  pass|except A:|  pass|except B:|  pass|finally:|  pass"),
            3,
            id="try-two-excepts",
        ),
        pytest.param(body("with x:|  pass"), 1, id="with-adds-nothing"),
        pytest.param(body("assert x"), 2, id="assert"),
        pytest.param(body("return x and y and x or y"), 4, id="boolops"),
        pytest.param(body("return [i for i in x if i if i > y for j in y]"), 3, id="comp-ifs"),
        pytest.param(body("return 1 if x else 2"), 2, id="ifexp"),
        pytest.param(body("return lambda: x or y"), 2, id="lambda-counts-in-parent"),
        pytest.param(body("def g():|  if x:|    pass"), 1, id="nested-def-excluded"),
        pytest.param(
            body("match x:|  case 1:|    pass|  case [a] if a:|    pass|  case _:|    pass"),
            3,
            id="match",
        ),
        pytest.param("async " + body("async for i in x:|  pass"), 2, id="async-for"),
    ],
)
def test_complexity_counts_documented_decision_points(code: str, expected: int) -> None:
    assert python_facts(code).functions[0].complexity == expected


def test_python_line_counts_use_the_tokenizer() -> None:
    code = '# header\n\ndef f():\n    """Doc.\n\n    More."""\n    return 1  # trailing\n\n'
    lines = python_facts(code).lines
    # the blank line inside the docstring is code; a trailing comment does not make a comment line
    assert (lines.total, lines.code, lines.comment, lines.blank) == (8, 5, 1, 2)
    assert lines.longest == len("    return 1  # trailing")


# ---------------------------------------------------------------- Python: broken code


def test_syntax_error_has_line_and_column_and_no_further_facts() -> None:
    facts = python_facts("import os\n\ndef f(:\n    pass\n")
    assert facts.syntax_error is not None
    assert (facts.syntax_error.line, facts.syntax_error.column) == (3, 7)
    assert facts.syntax_error.message == "invalid syntax"
    assert (facts.functions, facts.classes, facts.imports.modules) == ([], [], [])
    assert facts.lines.total == 4  # line metrics do not need a parse


def test_unterminated_string_falls_back_to_marker_line_counts() -> None:
    facts = python_facts("x = 1\n# note\ns = '''\nnever closed\n")
    assert facts.syntax_error is not None
    assert facts.syntax_error.line == 3
    assert (facts.lines.total, facts.lines.comment) == (4, 1)


def test_null_byte_and_deep_nesting_are_syntax_errors() -> None:
    null = python_facts("x = 1\ny = 2\x00\n").syntax_error
    assert null is not None
    assert (null.line, null.column) == (2, 6)
    deep = python_facts("a" + "+a" * 10_000).syntax_error
    assert deep is not None
    assert "nested" in deep.message


# ---------------------------------------------------------------- other languages

JS = """\
// header
/* block
   comment */
function foo(a) { return a; }
const bar = (x) => x * 2;
class K {
  constructor(x) {
    this.x = x; /* opens
  still comment */
  }
  async method(a, b) {
    if (a) { return b; }
  }
}

"""
GO = (
    'package main\n\n// c\nfunc main() {\n\tfmt.Println("hi")\n}\n\n'
    "func (r *T) M() int { return 1 }\n"
)
RUST = "/// doc\nfn main() {\n    let mut x = 1; // c\n}\n\npub fn add(a: i32) -> i32 { a }\n"
JAVA = (
    "public class A {\n  /** doc */\n  public static void main(String[] args) {\n"
    "    if (args.length > 0) {\n      System.out.println(args[0]);\n    }\n  }\n"
    "  private int size() { return 0; }\n}\n"
)
SHELL = "#!/bin/bash\n# comment\nfoo() {\n  echo hi\n}\nfunction bar {\n  :\n}\n"


def metrics(code: str, language: Any) -> MetricsFacts:
    facts = analyze_static(code, language)
    assert isinstance(facts, MetricsFacts)
    return facts


@pytest.mark.parametrize(
    ("code", "language", "counts", "functions"),
    [
        pytest.param(JS, "javascript", (15, 10, 4, 1), 4, id="javascript"),
        pytest.param(GO, "go", (8, 5, 1, 2), 2, id="go"),
        pytest.param(RUST, "rust", (6, 4, 1, 1), 2, id="rust"),
        pytest.param(JAVA, "java", (9, 8, 1, 0), 2, id="java"),
        pytest.param(SHELL, "shell", (8, 6, 2, 0), 2, id="shell"),
        pytest.param("hello\n\nworld\n", "text", (3, 2, 0, 1), None, id="text"),
    ],
)
def test_other_languages_line_metrics_and_function_estimate(
    code: str, language: str, counts: tuple[int, int, int, int], functions: int | None
) -> None:
    facts = metrics(code, language)
    assert (facts.lines.total, facts.lines.code, facts.lines.comment, facts.lines.blank) == counts
    assert facts.function_count_estimate == functions
    assert facts.lines.longest == max(len(line) for line in code.splitlines())


def test_crlf_and_final_newline_do_not_add_lines() -> None:
    assert metrics("a\r\nb\r\n", "go").lines.total == 2
    assert python_facts("x = 1\r\n\r\ny = 2").lines.total == 3


@pytest.mark.parametrize(
    "code",
    [
        "a " * 100_000,
        "(" * 200_000,
        ("x" * 100 + "\n") * 2_000,
        "/*" * 100_000,
        "int " * 50_000 + "(",
        "function (" * 20_000,
    ],
    ids=["words", "parens", "long-words", "markers", "c-types", "js-functions"],
)
def test_adversarial_200kb_inputs_stay_fast(code: str) -> None:
    started = time.perf_counter()
    for language in ("python", "javascript", "java", "c", "shell"):  # the regex-heavy ones
        analyze_static(code, language)
    guess_language(code)
    assert time.perf_counter() - started < 10  # ~1 s on a laptop; generous for CI


# ---------------------------------------------------------------- language detection


@pytest.mark.parametrize(
    ("code", "language", "filename", "expected"),
    [
        ("x", "rust", "a.py", "rust"),  # declared wins
        ("x", None, "src/App.TSX", "typescript"),
        ("x", None, "C:\\proj\\main.go", "go"),
        ("#!/usr/bin/env python3\nprint(1)\n", None, None, "python"),
        ("#!/bin/sh\necho hi\n", None, "Dockerfile", "shell"),
        ("import os\n\ndef f(x):\n    return self.x\n", None, None, "python"),
        (GO, None, None, "go"),
        (JS, None, None, "javascript"),
        (
            "interface A { x: string }\nconst f = (a: number): void => {}\n",
            None,
            None,
            "typescript",
        ),
        (RUST, None, None, "rust"),
        (JAVA, None, None, "java"),
        ('#include <stdio.h>\nint main(void) { printf("x"); }\n', None, None, "c"),
        ("just some words\n", None, None, "text"),
    ],
)
def test_language_detection(code: str, language: Any, filename: str | None, expected: str) -> None:
    assert detect_language(code, language, filename) == expected


def test_request_normalises_language_aliases_and_rejects_empty_code() -> None:
    assert CodeAnalysisRequest(code="x", language="C++").language == "cpp"
    assert CodeAnalysisRequest(code="x", language=" PY ").language == "python"
    with pytest.raises(ValidationError):
        CodeAnalysisRequest(code=" \n\t ")
    with pytest.raises(ValidationError):
        CodeAnalysisRequest(code="x", language="cobol")


# ---------------------------------------------------------------- the reviewer

VALID = json.dumps(
    {
        "summary": "Fine.",
        "findings": [{"line": 2, "severity": "warning", "message": "x unused"}],
        "suggestions": ["add tests"],
    }
)
CODE = "def f(x):\n    return x\n"


class FakeBackend:
    """Answers from a script; records every call."""

    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[dict[str, Any]] = []

    async def complete_json(
        self, model: str, system: str, prompt: str, schema: dict[str, Any]
    ) -> str:
        self.calls.append({"model": model, "system": system, "prompt": prompt, "schema": schema})
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def review_with(backend: Any, code: str = CODE, model: str = "m:1") -> Any:
    return await CodeReviewer(backend).review(code, analyze_static(code, "python"), model)


async def test_valid_answer_is_parsed_in_one_call() -> None:
    backend = FakeBackend(VALID)
    outcome = await review_with(backend)
    assert outcome.error is None
    assert outcome.review == Review.model_validate_json(VALID)
    [call] = backend.calls
    assert call["model"] == "m:1"
    assert call["schema"] == Review.model_json_schema()
    assert "1 | def f(x):" in call["prompt"]
    assert '"lines":{"total":2' in call["prompt"]  # the static facts are in the prompt
    assert '"f (lines 1-2, complexity 1)"' in call["prompt"]


async def test_invalid_then_valid_retries_once_with_the_validation_error() -> None:
    backend = FakeBackend('{"summary": "s", "findings": [{"line": "two"}]}', VALID)
    outcome = await review_with(backend)
    assert outcome.review is not None
    assert len(backend.calls) == 2
    retry = backend.calls[1]["prompt"]
    assert retry.startswith(backend.calls[0]["prompt"])
    assert "findings.0.line: Input should be a valid integer" in retry
    assert "suggestions: Field required" in retry


async def test_invalid_twice_gives_no_review_and_the_documented_error() -> None:
    backend = FakeBackend("not json", '{"summary": 1}')
    outcome = await review_with(backend)
    assert (outcome.review, outcome.error) == (None, INVALID_REVIEW_ERROR)
    assert len(backend.calls) == 2
    assert "Invalid JSON" in backend.calls[1]["prompt"]


async def test_out_of_range_lines_are_clamped_into_the_file() -> None:
    findings = [
        {"line": line, "severity": "info", "message": f"at {line}"} for line in (99, 0, -3, 2)
    ]
    answer = json.dumps({"summary": "s", "findings": findings, "suggestions": []})
    outcome = await review_with(FakeBackend(answer))
    assert [(f.line, f.message) for f in outcome.review.findings] == [
        (1, "at 0"),
        (1, "at -3"),
        (2, "at 99"),
        (2, "at 2"),
    ]


async def test_backend_problem_becomes_review_error() -> None:
    outcome = await review_with(FakeBackend(BadGateway("ollama is down")))
    assert (outcome.review, outcome.error) == (None, "the model backend failed: ollama is down")


def test_long_listing_is_cut_at_a_line_boundary() -> None:
    listing = numbered_listing("".join(f"line{i}\n" for i in range(1, 101)), 100)
    assert listing.splitlines()[0] == "  1 | line1"
    assert listing.endswith("lines 9-100 are not shown; review only the lines above]")


class SimBackend:
    """A minimal adapter over the Ollama simulator's /api/chat (stands in for main.py's)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def complete_json(
        self, model: str, system: str, prompt: str, schema: dict[str, Any]
    ) -> str:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
        body = {"model": model, "messages": messages, "format": schema, "stream": False}
        response = await self.client.post("/api/chat", json=body)
        response.raise_for_status()
        content: str = response.json()["message"]["content"]
        return content


async def test_review_schema_round_trips_through_the_ollama_simulator() -> None:
    transport = httpx.ASGITransport(app=create_app(SimConfig()))
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        outcome = await review_with(SimBackend(client), model="qwen2.5-coder:1.5b")
    assert outcome.error is None
    assert outcome.review is not None
    assert all(1 <= f.line <= 2 for f in outcome.review.findings)


# ---------------------------------------------------------------- the service


def request(**overrides: Any) -> CodeAnalysisRequest:
    return CodeAnalysisRequest(**{"code": CODE, **overrides})


ServiceFactory = Callable[..., CodeAnalysisService]


async def test_service_limits_size_in_utf8_bytes() -> None:
    service = CodeAnalysisService(None, max_code_bytes=10)
    assert (await service.analyze(request(code="é" * 5, review=False))).language == "text"
    with pytest.raises(PayloadTooLarge) as raised:
        await service.analyze(request(code="é" * 6))
    assert raised.value.extensions == {"limit_bytes": 10}


async def test_service_without_backend_or_without_review() -> None:
    without = await CodeAnalysisService(None).analyze(request(filename="a.py"))
    assert (without.review, without.review_error, without.model) == (
        None,
        NO_BACKEND_ERROR,
        "qwen2.5-coder:1.5b",
    )
    backend = FakeBackend()
    skipped = await CodeAnalysisService(backend).analyze(request(review=False))
    assert (skipped.review, skipped.review_error, skipped.model) == (None, None, None)
    assert backend.calls == []


async def test_service_passes_language_and_filename_to_the_prompt() -> None:
    backend = FakeBackend(VALID)
    result = await CodeAnalysisService(backend).analyze(request(filename="lib/f.py", model="x"))
    assert (result.language, result.model, result.review_error) == ("python", "x", None)
    assert 'Language: python\nFile name: "lib/f.py"' in backend.calls[0]["prompt"]
