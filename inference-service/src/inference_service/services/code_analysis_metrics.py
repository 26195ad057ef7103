"""Language-agnostic line metrics and the regex function-count estimate.

A line is *blank* when it holds only whitespace, *comment* when everything on it is comment
text (a line comment marker at its start, or inside/opening/closing a block comment), and
*code* otherwise — so ``x = 1  // note`` is a code line. Markers are found without
understanding strings, so ``"/*"`` inside a string literal can start a phantom block
comment: these are estimates, good for a size-and-shape overview, not for billing.
"""

from __future__ import annotations

from inference_service.models.code import Language, LineCounts, MetricsFacts
from inference_service.services.code_analysis_languages import SPECS, LanguageSpec


def split_lines(code: str) -> list[str]:
    r"""Physical lines; ``\r\n`` and ``\r`` count as newlines, a final newline adds no line."""
    lines = code.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _earliest_block_open(text: str, start: int, spec: LanguageSpec) -> tuple[int, str, str] | None:
    found: tuple[int, str, str] | None = None
    for opener, closer in spec.block_comments:
        index = text.find(opener, start)
        if index >= 0 and (found is None or index < found[0]):
            found = (index, opener, closer)
    return found


def _classify(line: str, spec: LanguageSpec, closer: str | None) -> tuple[str, str | None]:
    """``("blank" | "comment" | "code", block-comment closer still open after the line)``.

    Scans by index (no slicing), so a line full of markers stays linear in its length.
    """
    text = line.strip()
    if not text:
        return "blank", closer
    pos, size, has_code = 0, len(text), False
    while pos < size:
        if closer is not None:
            end = text.find(closer, pos)
            if end < 0:
                break
            pos, closer = end + len(closer), None
            continue
        while pos < size and text[pos] in " \t":
            pos += 1
        if pos >= size or (not has_code and text.startswith(spec.line_comments, pos)):
            break
        block = _earliest_block_open(text, pos, spec)
        if block is None:
            has_code = True
            break
        has_code = has_code or block[0] > pos
        pos, closer = block[0] + len(block[1]), block[2]
    return ("code" if has_code else "comment"), closer


def line_counts(code: str, spec: LanguageSpec) -> LineCounts:
    """Blank/comment/code line counts using the spec's comment markers."""
    lines = split_lines(code)
    counts = {"blank": 0, "comment": 0, "code": 0}
    closer: str | None = None
    for line in lines:
        kind, closer = _classify(line, spec, closer)
        counts[kind] += 1
    return LineCounts(
        total=len(lines),
        code=counts["code"],
        comment=counts["comment"],
        blank=counts["blank"],
        longest=max((len(line) for line in lines), default=0),
    )


def function_count_estimate(code: str, spec: LanguageSpec) -> int | None:
    """Regex matches of the spec's function patterns, line by line; None when it has none."""
    if not spec.function_patterns:
        return None
    return sum(
        len(pattern.findall(line))
        for line in split_lines(code)
        for pattern in spec.function_patterns
    )


def analyze_metrics(code: str, language: Language) -> MetricsFacts:
    """Line metrics and the function-count estimate for any language."""
    spec = SPECS[language]
    return MetricsFacts(
        lines=line_counts(code, spec), function_count_estimate=function_count_estimate(code, spec)
    )
