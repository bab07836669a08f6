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
import shlex
import xml.etree.ElementTree as ET
from pathlib import PurePath

from .. import __version__
from ..checker import ClaimResult, FileResult

# XML 1.0 forbids most control characters even when escaped; a message quoting a file must not break the XML.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value: object) -> str:
    return _NOT_XML.sub("\ufffd", str(value))


def _classname(path: str) -> str:
    """``derivations/dense.toml`` → ``derivations.dense``, the dotted grouping CI viewers show."""
    pure = PurePath(path)
    parts = [p for p in pure.with_suffix("").parts if p not in ("/", ".", "..")]
    return ".".join(parts) or pure.name


def counterexample_lines(c: ClaimResult) -> list[str]:
    """The counterexample as plain lines: dims, seed, entry, values, the true entry and the reproduce command."""
    cex = c.counterexample
    if cex is None:
        return []
    dims = ", ".join(f"{k}={v}" for k, v in cex.dims.items())
    where = f"trial {cex.trial}, " if isinstance(cex.trial, int) else ""
    lines = [f"counterexample: {where}dims {dims}, seed {cex.seed}, entry {cex.index}"]
    if cex.true == cex.true:  # not NaN: the symbolic engine gives no numbers
        lines.append(f"true {cex.true:.6g}, claimed {cex.claimed:.6g}")
    if cex.expression:
        lines.append(f"true entry, per neuron: {cex.expression}")
    lines.append(f"reproduce: {cex.command}")
    return lines


def failure_text(c: ClaimResult, path: str) -> str:
    """Everything a reader needs to act on a claim that is not ok, one fact per line."""
    lines = [f"{c.verdict}: {c.name} = {c.expr} (expected {c.expected})", c.message]
    if c.diagnosis:
        lines.append(f"diagnosis: {c.diagnosis}")
    lines += counterexample_lines(c)
    if c.counterexample is None:
        lines.append(f"reproduce: {shlex.join(['backpropcheck', 'check', path, '-v'])}")
    if c.depends_on_refuted:
        lines.append(f"uses {', '.join(c.depends_on_refuted)}, whose own claim is refuted")
    return "\n".join(lines)


def _testcase(parent: ET.Element, r: FileResult, c: ClaimResult) -> tuple[int, int]:
    case = ET.SubElement(parent, "testcase", name=_text(c.name), classname=_text(_classname(r.path)),
                         file=_text(r.path))
    seconds = (c.symbolic or {}).get("seconds")
    if isinstance(seconds, (int, float)):
        case.set("time", f"{seconds:.3f}")
    scope = (c.symbolic or {}).get("scope")
    if scope is not None and c.verdict == "proved":  # SPEC §8: the proof's scope and its argument
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", name="scope", value=_text(scope))
        ET.SubElement(props, "property", name="argument", value=_text(c.symbolic.get("argument", "")))
    if c.ok:
        if c.verdict != "proved":  # "verified" says why it is not proved; an expected verdict says so
            ET.SubElement(case, "system-out").text = _text(c.message)
        return 0, 0
    detail = failure_text(c, r.path)
    if c.verdict == "error":
        ET.SubElement(case, "error", message=_text(c.message), type="error").text = _text(detail)
        return 0, 1
    # the message attribute is what most viewers show first: keep the counterexample and reproduce there
    message = " | ".join([f"{c.verdict}: {c.message}"] + counterexample_lines(c)[:1] + [
        line for line in detail.splitlines() if line.startswith("reproduce: ")])
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
