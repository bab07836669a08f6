"""Fuzz ``backpropcheck check`` with corrupted derivation files; print the figures.

    .venv/bin/python bench/fuzz.py --cases 10000 --workers 2 --seed 0

Every case is one file made from a valid derivation by one mutator: byte flips, TOML
structure changes, expression mutations (payloads, huge literals, deep nesting, random
tokens), random expressions from a small grammar, or hostile dims/shapes. It runs through
the CLI in-process (click's test runner) with tiny settings (1 trial, 1 symbolic shape,
``--timeout 0.5``). A case fails when an exception escapes, the exit status is outside
{0, 1, 2}, the output has a "Traceback" or an "internal error", or it runs past the hard
time bound (the worker is then killed and restarted). The mutators are plain functions of
a ``random.Random``, so ``tests/test_fuzz.py`` drives the same ones from hypothesis.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import random
import re
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS_DIRS = [ROOT / "backpropcheck" / "derivations", ROOT.parent / "shared" / "examples"]

# -- the corpus -----------------------------------------------------------------------------


def corpus() -> list[tuple[str, bytes]]:
    """Every valid derivation we can find: the bundled library and the specification's examples."""
    out = []
    for folder in CORPUS_DIRS:
        if folder.is_dir():
            out += [(p.name, p.read_bytes()) for p in sorted(folder.rglob("*.toml"))]
    return out


# -- a minimal TOML writer (tomllib only reads) -----------------------------------------------


def _value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if v != v else ("inf" if v == math.inf else "-inf" if v == -math.inf else repr(v))
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=True)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


def dump_toml(doc: dict) -> bytes:
    """Top-level scalars first, then one ``[table]`` per dict (nested dicts become inline tables)."""
    lines = [f"{json.dumps(str(k))} = {_value(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for table, body in doc.items():
        if isinstance(body, dict):
            lines.append(f"[{json.dumps(str(table))}]")
            lines += [f"{json.dumps(str(k))} = {_value(v)}" for k, v in body.items()]
    return ("\n".join(lines) + "\n").encode()


# -- mutators: (rnd, original bytes) -> new bytes ---------------------------------------------

PAYLOADS = [
    "__import__('os').system('echo pwned')", "z.__class__.__bases__", "getattr(z, 'T')", "(lambda: 1)()",
    "[x for x in z]", "{x for x in z}", "{x: 1 for x in z}", "(x for x in n)", "f'{z}'", "(y := z)",
    "open('/etc/passwd')", "eval('1')", "exec('x=1')", "compile('1','','eval')", "tanh(**{'a': 1})",
    "tanh(*z)", "1e400", "10**100", "z ** 10**9", "z ** 1e308", "z ** -99999", "1" * 400, "0x" + "f" * 64,
    "(" * 200 + "z" + ")" * 200, "-" * 500 + "z", "z" + ".T" * 300, "z[:, None]" * 40, "sum(z, axis=99)",
    "einsum('ij,jk,kl,lm,mn,no,op,pq->iq', W, W, W, W, W, W, W, W)", "await z", "yield z", "z if z else z",
    "z and z", "not z", "~z", "z << 1", "z % 2", "z // 2", "z == z", "1 < z < 2", "z is z", "z in z", "...",
    "b'bytes'", "'string'", "True", "None", "1j", "z[0]", "z[::2]", "z[1:2]", "z.T.T.real", "__builtins__",
    "sum(sum(sum(sum(sum(a[i] for i in n) for j in n) for k in n) for l in n) for q in n)",
    "exp(exp(exp(exp(exp(z)))))", "(W @ a + 1) ** 16", "log(-z)", "sqrt(z) ** -16", "exp(1e6 * z)",
    "\x00", "\u202e", "z\n+ z", "# comment", "\\", "'''", '"', "z;z", "import os", "z = 1", "def f(): pass",
]

TOKENS = [
    "(", ")", "[", "]", ",", ".T", " @ ", " * ", " + ", " - ", " / ", " ** ", "**2", "[:, None]", "[None, :]",
    "sum(", "mean(", "exp(", "log(", "tanh(", "softmax(", "outer(", "dot(", "diag(", "eye(", "ones(", "where(",
    "maximum(", "trace(", "einsum(", "_prime(", "axis=", "axis=0", "axis=1", "keepdims=True", " for i in ",
    " > ", "0", "1", "2", "-1", "0.5", "1e6", "1e-300", "999999", "None", ":", " ", "grad_", "lambda", "__",
]

FUNCTIONS = ["exp", "log", "tanh", "sigmoid", "relu", "softplus", "sqrt", "abs", "square", "sin", "gelu",
             "tanh_prime", "sigmoid_prime", "relu_prime"]


def flip_bytes(rnd: random.Random, data: bytes) -> bytes:
    """Flip, insert, delete or duplicate a few bytes."""
    buf = bytearray(data)
    for _ in range(rnd.randint(1, 8)):
        if not buf:
            buf.append(rnd.randrange(256))
            continue
        k = rnd.randrange(len(buf))
        op = rnd.randrange(5)
        if op == 0:
            buf[k] ^= 1 << rnd.randrange(8)
        elif op == 1:
            buf.insert(k, rnd.choice(b"[]{}()\"'=,.\n#\\ \x00\xff0123456789_xT@*+-/"))
        elif op == 2:
            del buf[k]
        elif op == 3:
            j = min(len(buf), k + rnd.randint(1, 40))
            buf[k:k] = buf[k:j]
        else:
            buf[k] = rnd.randrange(256)
    return bytes(buf)


def _doc(data: bytes) -> dict:
    return tomllib.loads(data.decode())


def _tables(doc: dict) -> list[dict]:
    return [v for v in doc.values() if isinstance(v, dict)]


def _weird_value(rnd: random.Random, doc: dict) -> object:
    names = [k for t in _tables(doc) for k in t]
    return rnd.choice([
        0, -1, 1, 2**63 - 1, -(2**63), 1e308, math.inf, math.nan, -0.0, True, "", " ", "x" * 300, [], [[]],
        {}, {"shape": []}, {"shape": ["n"], "domain": "nope"}, ["n"] * 9, ["n + 999999"], ["100000 * n"],
        ["n - 10"], ["0"], [0], [-1], [1.5], [True], ["n", "n", "n", "n"], rnd.choice(names or ["x"]),
        rnd.choice(PAYLOADS), {"shape": ["n"], "constant": "yes"}, {"shape": ["n"], "axis": 5},
        {"shape": ["n"], "domain": "onehot"}, {"shape": ["n"], "domain": "simplex", "axis": -1}, "elementwise",
        "holds", "refuted", "shape-error", ["h", "h"], ["z", "nope"],
    ])


def toml_structure(rnd: random.Random, data: bytes) -> bytes:
    """Delete, rename, retype, duplicate or move keys and tables, then write the TOML back."""
    doc = _doc(data)
    for _ in range(rnd.randint(1, 3)):
        op = rnd.randrange(8)
        tables = list(doc)
        if not tables:
            break
        name = rnd.choice(tables)
        table = doc[name]
        if op == 0:
            del doc[name]
        elif op == 1:
            doc[name + rnd.choice(["s", "_", ""]) if rnd.random() < 0.5 else rnd.choice(
                ["check", "expect", "functions", "backward", "extra"])] = dict(table) if isinstance(table, dict) else {}
        elif op == 2:
            doc[name] = _weird_value(rnd, doc)
        elif isinstance(table, dict) and table:
            key = rnd.choice(list(table))
            if op == 3:
                del table[key]
            elif op == 4:
                table[key] = _weird_value(rnd, doc)
            elif op == 5:
                table[rnd.choice([key + "2", key.upper(), "grad_" + key, f"{key}[i]", "seed", "trials", "shapes",
                                  "max_dim", "rtol", "E", "upstream", "title", "z", "__class__"])] = table[key]
            elif op == 6:
                other = rnd.choice(_tables(doc))
                other[key] = table.pop(key)
            else:
                items = list(table.items())
                rnd.shuffle(items)
                doc[name] = dict(items)
        else:
            doc["check"] = {rnd.choice(["seed", "trials", "shapes", "max_dim", "rtol", "atol"]): _weird_value(rnd, doc)}
    return dump_toml(doc)


def _expression_slots(doc: dict) -> list[tuple[str, str]]:
    out = []
    for table in ("forward", "backward", "claims", "loss"):
        body = doc.get(table)
        if isinstance(body, dict):
            out += [(table, k) for k, v in body.items() if isinstance(v, str)]
    return out


def _names(doc: dict) -> list[str]:
    names = []
    for table in ("dims", "inputs", "forward", "backward"):
        if isinstance(doc.get(table), dict):
            names += [k.split("[")[0] for k in doc[table]]
    names += ["grad_" + n for n in names]
    return names or ["z"]


def mutate_expression(rnd: random.Random, data: bytes) -> bytes:
    """Splice payloads, random tokens, other names or repeated pieces into one expression."""
    doc = _doc(data)
    slots = _expression_slots(doc)
    if not slots:
        return toml_structure(rnd, data)
    table, key = rnd.choice(slots)
    text = doc[table][key]
    names = _names(doc)
    for _ in range(rnd.randint(1, 4)):
        op = rnd.randrange(7)
        k = rnd.randint(0, len(text))
        if op == 0:
            text = rnd.choice(PAYLOADS).replace("z", rnd.choice(names))
        elif op == 1:
            text = text[:k] + rnd.choice(TOKENS) + text[k:]
        elif op == 2:
            text = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: rnd.choice(names) if rnd.random() < 0.3 else m.group(0), text)
        elif op == 3:
            j = rnd.randint(k, len(text))
            text = text[:k] + text[k:j] * rnd.randint(2, 50) + text[j:]
        elif op == 4:
            text = text[:k] + text[rnd.randint(k, len(text)):]
        elif op == 5:
            depth = rnd.choice([10, 70, 500, 10_000])
            text = "(" * depth + text + ")" * depth
        else:
            text = f"{text} {rnd.choice(['+', '*', '@', '-', '/'])} {rnd.choice(PAYLOADS)}"
    doc[table][key] = text
    return dump_toml(doc)


def random_expression(rnd: random.Random, names: list[str], depth: int = 0) -> str:
    """A random expression from the language's grammar over the file's names (often ill-shaped)."""
    if depth > 4 or rnd.random() < 0.3:
        return rnd.choice(names + ["1", "2.5", "0.5", "-1"])
    kind = rnd.randrange(9)
    sub = lambda: random_expression(rnd, names, depth + 1)  # noqa: E731 - a local shorthand
    if kind == 0:
        return f"{sub()} {rnd.choice(['+', '-', '*', '/', '@'])} {sub()}"
    if kind == 1:
        return f"{rnd.choice(FUNCTIONS)}({sub()})"
    if kind == 2:
        return f"({sub()}) ** {rnd.choice(['2', '3', '-1', '0.5', '16', '-1.5'])}"
    if kind == 3:
        return f"{rnd.choice(['sum', 'mean', 'softmax', 'logsumexp', 'log_softmax'])}({sub()}, axis={rnd.choice([0, 1, -1])})"
    if kind == 4:
        return f"{rnd.choice(['outer', 'dot', 'maximum', 'minimum'])}({sub()}, {sub()})"
    if kind == 5:
        return f"({sub()}).T"
    if kind == 6:
        return f"({sub()}){rnd.choice(['[:, None]', '[None, :]'])}"
    if kind == 7:
        return f"where({sub()} > {sub()}, {sub()}, {sub()})"
    return f"{rnd.choice(['diag', 'trace', 'sum', 'mean'])}({sub()})"


def generate_expressions(rnd: random.Random, data: bytes) -> bytes:
    """Replace one to three expressions by random ones from the grammar."""
    doc = _doc(data)
    slots = _expression_slots(doc)
    if not slots:
        return toml_structure(rnd, data)
    names = _names(doc)
    for table, key in rnd.sample(slots, min(len(slots), rnd.randint(1, 3))):
        doc[table][key] = random_expression(rnd, names)
    return dump_toml(doc)


def hostile_dims(rnd: random.Random, data: bytes) -> bytes:
    """Big affine dims, many or high-rank inputs, odd domains, heavy [check] settings."""
    doc = _doc(data)
    dims = [k for k in doc.get("dims", {})] or ["n"]
    inputs = doc.get("inputs") if isinstance(doc.get("inputs"), dict) else {}
    op = rnd.randrange(6)
    if op == 0 and inputs:
        key = rnd.choice(list(inputs))
        d = rnd.choice(dims)
        inputs[key] = rnd.choice([[f"{d} + 999999"], [f"999 * {d}"], [d] * rnd.randint(3, 9), [f"{d} - 50"],
                                  [8192, 8192], [1, 1, 1, 1, 1], [f"{d} + {d} + {d} - 2"]])
    elif op == 1:
        doc["check"] = {"trials": rnd.choice([0, 1, 10**9]), "shapes": rnd.choice([0, 1, 10**9]),
                        "max_dim": rnd.choice([0, 1, 2, 10**9])}
    elif op == 2:
        doc["dims"] = {f"d{k}": "x" for k in range(rnd.choice([0, 17, 100]))} | doc.get("dims", {})
    elif op == 3 and inputs:
        key = rnd.choice(list(inputs))
        spec = inputs[key]
        shape = spec["shape"] if isinstance(spec, dict) else spec
        inputs[key] = {"shape": shape, "domain": rnd.choice(["real", "positive", "unit", "simplex", "onehot"]),
                       "constant": rnd.random() < 0.5, "axis": rnd.choice([0, -1, 1, 3])}
    elif op == 4:
        doc.setdefault("forward", {})
        if isinstance(doc["forward"], dict):
            free = ",".join(f"i{k}" for k in range(rnd.randint(1, 6)))
            d = rnd.choice(dims)
            body = " * ".join(f"{rnd.choice(list(inputs) or ['a'])}[i0]" for _ in range(2))
            for k in range(rnd.randint(0, 5)):
                body = f"sum({body} for j{k} in {d})"
            doc["forward"][f"q[{free}]"] = body
    else:
        doc["inputs"] = {f"x{k}": ["n"] for k in range(rnd.choice([65, 200]))} | inputs
    return dump_toml(doc)


# Well-shaped random expressions over a dense layer (a: n, W: m x n, b: m), so the engines, the
# diagnosis, NaN/Inf handling and the time budget see real work, not only parse errors.
TYPED_BASE = """
[derivation]
title = "typed fuzz"
[dims]
n = "inputs"
m = "outputs"
[inputs]
a = ["n"]
W = ["m", "n"]
b = ["m"]
u = {{ shape = ["m"], domain = "{domain}" }}
[forward]
z = {forward_z}
h = {forward_h}
[loss]
{loss}
[claims]
grad_z = {claim_z}
grad_a = {claim_a}
grad_W = {claim_W}
"""

ELEMENTWISE_FNS = ["tanh", "sigmoid", "exp", "log", "sqrt", "relu", "softplus", "abs", "square", "sin", "gelu",
                   "log1p", "rsqrt", "erf", "cos"]


def typed_expression(rnd: random.Random, shape: str, leaves: dict[str, list[str]], depth: int = 0) -> str:
    """A random expression of shape "n", "m", "mn" or "" (scalar) over the given leaves."""
    def sub(s: str) -> str:
        return typed_expression(rnd, s, leaves, depth + 1)

    if depth >= 4 or rnd.random() < 0.25:
        return rnd.choice(leaves[shape])
    other = "n" if shape == "m" else "m"
    choices: list[Callable[[], str]] = [
        lambda: f"{rnd.choice(ELEMENTWISE_FNS)}({sub(shape)})",
        lambda: f"({sub(shape)} {rnd.choice(['+', '-', '*', '/'])} {sub(shape)})",
        lambda: f"({sub('')} * {sub(shape)})",
        lambda: f"({sub(shape)}) ** {rnd.choice(['2', '3', '-1', '0.5', '-0.5', '16', '-1.5'])}",
        lambda: f"where({sub(shape)} > {sub(shape)}, {sub(shape)}, {sub(shape)})",
        lambda: f"{rnd.choice(['maximum', 'minimum'])}({sub(shape)}, {sub(shape)})",
    ]
    if shape == "m":
        choices += [lambda: f"W @ {sub('n')}", lambda: f"softmax({sub('m')}, axis=0)",
                    lambda: f"sum({sub('mn')}, axis=1)", lambda: f"log_softmax({sub('m')}, axis=0)",
                    lambda: f"diag(outer({sub('m')}, {sub('m')}))"]
    elif shape == "n":
        choices += [lambda: f"W.T @ {sub('m')}", lambda: f"{sub('m')} @ W", lambda: f"mean({sub('mn')}, axis=0)",
                    lambda: f"einsum('ij,i->j', W, {sub('m')})"]
    elif shape == "mn":
        choices += [lambda: f"outer({sub('m')}, {sub('n')})", lambda: f"{sub('m')}[:, None] * {sub('n')}[None, :]",
                    lambda: f"diag({sub('m')}) @ W", lambda: f"({sub('mn')}).T.T"]
    else:
        choices += [lambda: f"sum({sub(rnd.choice(['m', 'n', 'mn']))})", lambda: f"dot({sub(other)}, {sub(other)})",
                    lambda: f"logsumexp({sub('m')}, axis=0)", lambda: f"trace(diag({sub('n')}))",
                    lambda: rnd.choice(["n", "m", "0.5", "2", "1e-3", "1000"])]
    return rnd.choice(choices)()


def typed_file(rnd: random.Random, data: bytes) -> bytes:
    """A dense layer whose forward pass and claims are random well-shaped expressions."""
    inputs = {"n": ["a"], "m": ["b", "u"], "mn": ["W"], "": ["1", "2", "0.5", "n"]}
    forward = {**inputs, "m": ["b", "u", "z"]}
    grads = {"n": ["a"], "m": ["z", "h", "b", "grad_h", "grad_z"], "mn": ["W"],
             "": ["1", "2", "m"]}
    upstream = rnd.random() < 0.6
    z = "W @ a + b" if rnd.random() < 0.5 else typed_expression(rnd, "m", inputs)
    h = f"{rnd.choice(ELEMENTWISE_FNS)}(z)" if rnd.random() < 0.5 else typed_expression(rnd, "m", forward)
    loss = 'upstream = "h"' if upstream else f"E = {json.dumps(typed_expression(rnd, '', {**forward, 'm': ['z', 'h']}))}"
    if not upstream:
        grads["m"] = [g for g in grads["m"] if g != "grad_h"]
    claims = {
        "claim_z": rnd.choice(["grad_h * tanh_prime(z)", typed_expression(rnd, "m", grads)]),
        "claim_a": rnd.choice(["W.T @ grad_z", typed_expression(rnd, "n", grads)]),
        "claim_W": rnd.choice(["outer(grad_z, a)", typed_expression(rnd, "mn", grads)]),
    }
    text = TYPED_BASE.format(domain=rnd.choice(["real", "positive", "unit"]), forward_z=json.dumps(z),
                             forward_h=json.dumps(h), loss=loss, **{k: json.dumps(v) for k, v in claims.items()})
    return text.encode()


MUTATORS: dict[str, Callable[[random.Random, bytes], bytes]] = {
    "bytes": flip_bytes,
    "toml": toml_structure,
    "expression": mutate_expression,
    "generated": generate_expressions,
    "dims": hostile_dims,
    "typed": typed_file,
}


def make_case(seed: int, index: int, files: list[tuple[str, bytes]]) -> tuple[str, str, bytes]:
    """Case ``index`` of a run: (mutator, source file, bytes), deterministic in (seed, index)."""
    rnd = random.Random(f"{seed}:{index}")
    name, data = rnd.choice(files)
    kind = rnd.choice(list(MUTATORS))
    try:
        out = MUTATORS[kind](rnd, data)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        out = flip_bytes(rnd, data)
    return kind, name, out


# -- running a case ---------------------------------------------------------------------------

TINY = ["--trials", "1", "--shapes", "1", "--timeout", "0.5", "--max-dim", "8"]
FORMATS = [[], ["--format", "json"], ["--format", "junit"], ["--format", "markdown"]]


def run_cli(path: str, extra: list[str]) -> tuple[int | None, str, str | None]:
    """(exit status, output, escaped exception) of ``backpropcheck check`` run in-process."""
    from click.testing import CliRunner

    from backpropcheck.cli import main

    result = CliRunner().invoke(main, ["check", path, *extra])
    escaped = None
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        escaped = "".join(traceback.format_exception(result.exception))
    return result.exit_code, result.output, escaped


def problems(status: int | None, output: str, escaped: str | None) -> list[str]:
    """What is wrong with one run: the fuzzing oracle."""
    out = []
    if escaped:
        out.append("exception escaped: " + escaped.strip().splitlines()[-1])
    if status not in (0, 1, 2):
        out.append(f"exit status {status}")
    if "Traceback" in output:
        out.append("Traceback in the output")
    if "Warning:" in output:
        out.append("a warning leaked: " + next(line for line in output.splitlines() if "Warning:" in line))
    if "internal error" in output:
        out.append("internal error: " + next(line for line in output.splitlines() if "internal error" in line))
    return out


def _worker(seed: int, tasks: mp.Queue, results: mp.Queue) -> None:
    files = corpus()
    folder = Path(tempfile.mkdtemp(prefix="bpc-fuzz-"))
    while True:
        index = tasks.get()
        if index is None:
            return
        kind, source, data = make_case(seed, index, files)
        path = folder / f"case{index}.toml"
        path.write_bytes(data)
        fmt = FORMATS[index % len(FORMATS)]
        started = time.perf_counter()
        status, output, escaped = run_cli(str(path), TINY + ["--seed", str(index % 7)] + fmt)
        seconds = time.perf_counter() - started
        results.put((index, kind, source, status, seconds, problems(status, output, escaped)))
        path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hard-timeout", type=float, default=60.0,
                        help="seconds after which a case counts as a hang and its worker is killed")
    parser.add_argument("--save", type=Path, default=ROOT / "bench" / "fuzz-failures",
                        help="folder for the files of failing cases")
    args = parser.parse_args(argv)

    ctx = mp.get_context("fork")
    results: mp.Queue = ctx.Queue()
    workers: dict[int, tuple] = {}

    def start(slot: int) -> None:
        tasks = ctx.Queue()
        proc = ctx.Process(target=_worker, args=(args.seed, tasks, results), daemon=True)
        proc.start()
        workers[slot] = (proc, tasks, None, 0.0)

    for slot in range(args.workers):
        start(slot)
    todo = list(range(args.cases))[::-1]
    statuses: Counter = Counter()
    kinds: Counter = Counter()
    failures: list[tuple] = []
    slowest = (0.0, None)
    done = 0
    started = time.perf_counter()
    while done < args.cases:
        for slot, (proc, tasks, current, since) in list(workers.items()):
            if current is None and todo:
                index = todo.pop()
                tasks.put(index)
                workers[slot] = (proc, tasks, index, time.perf_counter())
            elif current is not None and time.perf_counter() - since > args.hard_timeout:
                proc.kill()
                proc.join()
                failures.append((current, "hang", f"over {args.hard_timeout:g} s"))
                statuses["hang"] += 1
                done += 1
                start(slot)
        try:
            index, kind, source, status, seconds, bad = results.get(timeout=0.2)
        except Exception:  # noqa: BLE001 - queue.Empty: poll the workers again
            continue
        for slot, (proc, tasks, current, _since) in workers.items():
            if current == index:
                workers[slot] = (proc, tasks, None, 0.0)
        done += 1
        statuses[status] += 1
        kinds[kind] += 1
        if seconds > slowest[0]:
            slowest = (seconds, index)
        if bad:
            failures.append((index, kind, "; ".join(bad)))
        if done % 500 == 0:
            print(f"  {done} cases, {time.perf_counter() - started:.0f} s, {len(failures)} failing", flush=True)
    for _proc, tasks, _, _ in workers.values():
        tasks.put(None)
    elapsed = time.perf_counter() - started

    if failures:
        args.save.mkdir(parents=True, exist_ok=True)
        files = corpus()
        for index, kind, why in failures[:50]:
            _, _, data = make_case(args.seed, index, files)
            (args.save / f"case{index}.toml").write_bytes(data)
            print(f"FAIL case {index} ({kind}): {why}")
    print(f"cases: {done} in {elapsed:.0f} s with {args.workers} workers (seed {args.seed})")
    print("mutators: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    print("exit status: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items(), key=str)))
    print(f"max per-case time: {slowest[0]:.2f} s (case {slowest[1]})")
    print(f"failures: {len(failures)} (escaped exceptions, tracebacks, internal errors, statuses outside 0/1/2, hangs)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
