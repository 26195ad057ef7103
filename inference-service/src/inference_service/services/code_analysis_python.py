"""Static facts about Python source from ``ast`` (structure) and ``tokenize`` (line kinds).

Cyclomatic complexity (:func:`cyclomatic_complexity`) is 1 plus one per decision point in
the function's own body:

* ``if`` and each ``elif`` (+1 each), conditional expressions ``a if c else b`` (+1);
* ``for``, ``async for``, ``while`` (+1; their ``else`` adds nothing);
* each ``except`` / ``except*`` clause (+1; ``else`` and ``finally`` add nothing);
* ``assert`` (+1: it passes or raises);
* boolean operators: ``a and b or c`` adds ``len(values) - 1`` per ``BoolOp`` node (+2 here);
* comprehensions: each ``if`` clause (+1); the comprehension's ``for`` adds nothing;
* ``match``: each ``case`` (+1) except an unguarded catch-all (``case _:`` / ``case x:``).

``with`` adds nothing (no branch in the source). Lambdas count toward the function they are
written in; nested ``def``/``class`` bodies do not — nested functions get their own score.
All walks are iterative, so deep nesting cannot overflow the interpreter's stack here; code
nested too deeply for CPython's own parser is reported as a syntax error.
"""

from __future__ import annotations

import ast
import io
import tokenize

from inference_service.models.code import (
    ClassFacts,
    FromImportFacts,
    FunctionFacts,
    ImportFacts,
    LineCounts,
    PythonFacts,
    SyntaxErrorFacts,
)
from inference_service.services.code_analysis_languages import SPECS
from inference_service.services.code_analysis_metrics import line_counts, split_lines

MAX_EXPRESSION_CHARS = 200

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
_NOT_CODE = frozenset(
    {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    | {tokenize.ENDMARKER, tokenize.ENCODING}
)


def python_line_counts(code: str) -> LineCounts:
    """Line kinds from the tokenizer: a docstring or multi-line string counts as code.

    Code the tokenizer rejects falls back to the generic ``#``-marker counter.
    """
    lines = split_lines(code)
    code_lines: set[int] = set()
    comment_lines: set[int] = set()
    normalised = "\n".join(lines) + "\n"
    try:
        for token in tokenize.generate_tokens(io.StringIO(normalised).readline):
            if token.type == tokenize.COMMENT:
                comment_lines.add(token.start[0])
            elif token.type not in _NOT_CODE:
                code_lines.update(range(token.start[0], token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        return line_counts(code, SPECS["python"])
    comment_only = comment_lines - code_lines
    blank = sum(
        1 for number, line in enumerate(lines, 1) if not line.strip() and number not in code_lines
    )
    return LineCounts(
        total=len(lines),
        code=len(lines) - len(comment_only) - blank,
        comment=len(comment_only),
        blank=blank,
        longest=max((len(line) for line in lines), default=0),
    )


def _source(node: ast.expr) -> str:
    try:
        text = ast.unparse(node)
    except (RecursionError, ValueError):
        return "<expression>"
    return text if len(text) <= MAX_EXPRESSION_CHARS else text[: MAX_EXPRESSION_CHARS - 1] + "…"


def _is_catch_all(case: ast.match_case) -> bool:
    pattern = case.pattern
    return case.guard is None and isinstance(pattern, ast.MatchAs) and pattern.pattern is None


def _decision_points(node: ast.AST) -> int:
    if isinstance(node, ast.If | ast.IfExp | ast.For | ast.AsyncFor | ast.While | ast.Assert):
        return 1
    if isinstance(node, ast.ExceptHandler):
        return 1
    if isinstance(node, ast.BoolOp):
        return len(node.values) - 1
    if isinstance(node, ast.comprehension):
        return len(node.ifs)
    if isinstance(node, ast.Match):
        return sum(1 for case in node.cases if not _is_catch_all(case))
    return 0


def cyclomatic_complexity(function: _FunctionNode) -> int:
    """1 + decision points in the function's own body (see the module docstring)."""
    score = 1
    stack: list[ast.AST] = [node for node in function.body if not isinstance(node, _SCOPES)]
    while stack:
        node = stack.pop()
        score += _decision_points(node)
        stack.extend(
            child for child in ast.iter_child_nodes(node) if not isinstance(child, _SCOPES)
        )
    return score


def _argument_count(arguments: ast.arguments) -> int:
    named = len(arguments.posonlyargs) + len(arguments.args) + len(arguments.kwonlyargs)
    return named + (arguments.vararg is not None) + (arguments.kwarg is not None)


def _end(node: ast.stmt) -> int:
    return node.end_lineno if node.end_lineno is not None else node.lineno


class _StructureCollector:
    """One iterative pass over the tree collecting functions, classes and imports."""

    def __init__(self) -> None:
        self.functions: list[FunctionFacts] = []
        self.classes: list[ClassFacts] = []
        self.modules: set[str] = set()
        self.from_imports: list[FromImportFacts] = []

    def collect(self, tree: ast.Module) -> None:
        # (node, enclosing qualname parts, directly inside a class body?)
        stack: list[tuple[ast.AST, tuple[str, ...], bool]] = [
            (node, (), False) for node in reversed(tree.body)
        ]
        while stack:
            node, scope, in_class = stack.pop()
            inner_scope, inner_in_class = scope, in_class
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self._function(node, scope, in_class)
                inner_scope, inner_in_class = (*scope, node.name), False
            elif isinstance(node, ast.ClassDef):
                self._class(node, scope)
                inner_scope, inner_in_class = (*scope, node.name), True
            elif isinstance(node, ast.Import):
                self.modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                self.from_imports.append(
                    FromImportFacts(
                        module="." * node.level + (node.module or ""),
                        names=[alias.name for alias in node.names],
                        line=node.lineno,
                    )
                )
            children = list(ast.iter_child_nodes(node))
            stack.extend((child, inner_scope, inner_in_class) for child in reversed(children))

    def _function(self, node: _FunctionNode, scope: tuple[str, ...], in_class: bool) -> None:
        self.functions.append(
            FunctionFacts(
                name=node.name,
                qualname=".".join((*scope, node.name)),
                lineno=node.lineno,
                end_lineno=_end(node),
                is_async=isinstance(node, ast.AsyncFunctionDef),
                is_method=in_class,
                decorators=[_source(decorator) for decorator in node.decorator_list],
                arguments=_argument_count(node.args),
                complexity=cyclomatic_complexity(node),
            )
        )

    def _class(self, node: ast.ClassDef, scope: tuple[str, ...]) -> None:
        self.classes.append(
            ClassFacts(
                name=node.name,
                qualname=".".join((*scope, node.name)),
                lineno=node.lineno,
                end_lineno=_end(node),
                decorators=[_source(decorator) for decorator in node.decorator_list],
                bases=[_source(base) for base in node.bases],
                methods=sum(
                    isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) for child in node.body
                ),
            )
        )


def _syntax_error(exc: SyntaxError, code: str) -> SyntaxErrorFacts:
    line, column = exc.lineno, exc.offset
    if line is None and "\x00" in code:  # "source code string cannot contain null bytes"
        before = code[: code.index("\x00")].replace("\r\n", "\n").replace("\r", "\n")
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
    return SyntaxErrorFacts(
        message=exc.msg or "invalid syntax",
        line=line or 1,
        column=column or 1,
        end_line=exc.end_lineno,
        end_column=exc.end_offset,
    )


def analyze_python(code: str) -> PythonFacts:
    """Line counts always; the AST facts only when the code parses (else ``syntax_error``)."""
    lines = python_line_counts(code)
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return PythonFacts(lines=lines, syntax_error=_syntax_error(exc, code))
    except (RecursionError, MemoryError):
        nested = SyntaxErrorFacts(message="too deeply nested for the parser", line=1, column=1)
        return PythonFacts(lines=lines, syntax_error=nested)
    collector = _StructureCollector()
    collector.collect(tree)
    return PythonFacts(
        lines=lines,
        functions=sorted(collector.functions, key=lambda f: (f.lineno, f.qualname)),
        classes=sorted(collector.classes, key=lambda c: (c.lineno, c.qualname)),
        imports=ImportFacts(
            modules=sorted(collector.modules),
            from_imports=sorted(collector.from_imports, key=lambda i: i.line),
        ),
    )
