"""``--format junit``: JUnit XML that CI systems display — a testsuite per file, a testcase per claim.

A claim that is not ``ok`` (refuted, a shape error, or an unexpected ``holds``)
is a ``<failure>`` whose message carries the counterexample and the command
that reproduces it; a claim whose verdict is ``error`` is an ``<error>``, and
so is a file that could not be checked at all (one testcase named after the
file). The counts match the JSON summary: ``failures == failed``,
``errors == errors`` and ``tests == claims + files without claims``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import PurePath

from .. import __version__
from ..results import ClaimResult, FileResult
from .failure import failure_fragments, failure_text

__all__ = ["failure_text", "render", "to_element"]

# XML 1.0 forbids most control characters even when escaped; a message quoting a file must not break the XML.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: object) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _classname(path: str) -> str:
    """``derivations/dense.toml`` → ``derivations.dense``, the dotted grouping CI viewers show."""
    pure = PurePath(path)
    parts = [p for p in pure.with_suffix("").parts if p not in ("/", ".", "..")]
    return ".".join(parts) or pure.name


def _testcase(parent: ET.Element, r: FileResult, c: ClaimResult) -> tuple[int, int]:
    case = ET.SubElement(parent, "testcase", name=_text(c.name), classname=_text(_classname(r.path)),
                         file=_text(r.path))
    seconds = (c.symbolic or {}).get("seconds")
    if isinstance(seconds, (int, float)):
        case.set("time", f"{seconds:.3f}")
    symbolic = c.symbolic or {}
    scope = symbolic.get("scope")
    if scope is not None and c.verdict == "proved":  # SPEC §8: the proof's scope and its argument
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", name="scope", value=_text(scope))
        ET.SubElement(props, "property", name="argument", value=_text(symbolic.get("argument", "")))
    if c.ok:
        if c.verdict != "proved":  # "verified" says why it is not proved; an expected verdict says so
            ET.SubElement(case, "system-out").text = _text(c.message)
        return 0, 0
    fragments = failure_fragments(c, r.path)
    detail = "\n".join(f.line() for f in fragments)
    if c.verdict == "error":
        ET.SubElement(case, "error", message=_text(c.message), type="error").text = _text(detail)
        return 0, 1
    # the message attribute is what most viewers show first: keep the counterexample and reproduce there
    message = " | ".join([f"{c.verdict}: {c.message}"] + [f.line() for f in fragments if f.kind in ("where", "reproduce")])
    ET.SubElement(case, "failure", message=_text(message), type=_text(c.verdict)).text = _text(detail)
    return 1, 0


def to_element(results: list[FileResult], seed: int) -> ET.Element:
    root = ET.Element("testsuites", name="backpropcheck")
    totals = [0, 0, 0, 0.0]  # tests, failures, errors, time
    for r in results:
        suite = ET.SubElement(root, "testsuite", name=_text(r.path))
        props = ET.SubElement(suite, "properties")
        ET.SubElement(props, "property", name="title", value=_text(r.title))
        ET.SubElement(props, "property", name="status", value=r.status)
        ET.SubElement(props, "property", name="seed", value=str(seed))
        ET.SubElement(props, "property", name="backpropcheck", value=__version__)
        tests = failures = errors = 0
        if r.status == "error" and not r.claims:
            case = ET.SubElement(suite, "testcase", name=_text(PurePath(r.path).name),
                                 classname=_text(_classname(r.path)), file=_text(r.path))
            ET.SubElement(case, "error", message=_text(r.error or "invalid file"), type="invalid-file").text = \
                _text(r.error or "invalid file")
            tests, errors = 1, 1
        else:
            if r.error:
                ET.SubElement(props, "property", name="note", value=_text(r.error))
            for c in r.claims:
                f, e = _testcase(suite, r, c)
                tests, failures, errors = tests + 1, failures + f, errors + e
        suite.set("tests", str(tests))
        suite.set("failures", str(failures))
        suite.set("errors", str(errors))
        suite.set("skipped", "0")
        suite.set("time", f"{r.seconds:.3f}")
        totals = [totals[0] + tests, totals[1] + failures, totals[2] + errors, totals[3] + r.seconds]
    root.set("tests", str(totals[0]))
    root.set("failures", str(totals[1]))
    root.set("errors", str(totals[2]))
    root.set("skipped", "0")
    root.set("time", f"{totals[3]:.3f}")
    return root


def render(results: list[FileResult], seed: int) -> str:
    root = to_element(results, seed)
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
