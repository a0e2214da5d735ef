"""``drills``: tiny generated tasks for training demos, small enough for a model trained from
scratch on a CPU to learn.

Two domains, 8 tasks each, selected by the id prefix (``files-``, ``code-``) and named in
``metadata["domain"]``:

- ``files``: write a given word to a given file (``echo apple > notes.txt``);
- ``code``: fix the operator of a two-line Python function in ``calc.py`` (one ``sed -i``).

Each runs on kwaigym's base image with no image build and no files on disk (the setup writes
what a task needs; the ``output`` verifier needs no task root), finishes in seconds, and carries
its solution inline (``Solution.command``), so the oracle's tool call shows the real command.
The order, the words and the operators are fixed: the same tasks every time.
"""

from __future__ import annotations

import operator
import shlex

from kwaigym.datasets.base import TaskList, check_verifier
from kwaigym.task import Environment, Solution, Task, VerifierSpec

WORKDIR = "/workspace"
#: (file name without .txt, word): distinct short lowercase words.
FILES = (
    ("notes", "apple"),
    ("todo", "river"),
    ("hello", "green"),
    ("answer", "seven"),
    ("memo", "cloud"),
    ("log", "stone"),
    ("draft", "tiger"),
    ("reply", "lemon"),
)
#: (function, the operator it must use, the wrong one it uses).
CODE = (
    ("add", "+", "-"),
    ("total", "+", "*"),
    ("sub", "-", "+"),
    ("diff", "-", "*"),
    ("mul", "*", "+"),
    ("product", "*", "-"),
    ("combine", "+", "-"),
    ("subtract", "-", "+"),
)
OP_NAMES = {"+": "plus", "-": "minus", "*": "times"}
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
#: Inputs on which every pair of operators gives different results, so a wrong one fails them all.
INPUTS = ((7, 3), (2, 5), (-4, 6))
CALC = """\
import sys


def {fn}(a, b):
    return a {wrong} b


a, b = map(int, sys.stdin.read().split())
print({fn}(a, b))
"""


def _environment(setup: tuple[str, ...] = ()) -> Environment:
    """The base image (no image, no build context), small limits: a drill takes seconds."""
    return Environment(setup=setup, memory_mb=512, disk_mb=64, agent_timeout_s=120.0)


def _files_task(name: str, word: str) -> Task:
    params = {"answer": word, "answer_file": f"{WORKDIR}/{name}.txt", "mode": "exact"}
    return Task(
        id=f"files-{name}",
        instruction=f"Write the word {word} to the file {name}.txt in the workspace.",
        environment=_environment(),
        verifier=VerifierSpec(kind="output", params=params, timeout_s=30.0),
        solution=Solution(command=f"echo {word} > {name}.txt"),
        metadata={"domain": "files", "source": "drills"},
    )


def _code_task(fn: str, op: str, wrong: str) -> Task:
    calc = CALC.format(fn=fn, wrong=wrong)
    cases = [{"input": f"{a} {b}", "output": str(OPS[op](a, b))} for a, b in INPUTS]
    program = f"python3 {WORKDIR}/calc.py"
    params = {"program": program, "cases": cases, "mode": "exact", "all_or_nothing": True}
    pattern = f"a {wrong} b".replace("*", r"\*")  # a sed pattern: `*` repeats unless escaped
    return Task(
        id=f"code-{fn}-{OP_NAMES[op]}",
        instruction=f"calc.py is wrong: {fn}(a, b) must return a {op} b. Fix it.",
        environment=_environment((f"printf %s {shlex.quote(calc)} > {WORKDIR}/calc.py",)),
        verifier=VerifierSpec(kind="output", params=params, timeout_s=30.0),
        solution=Solution(command=f"sed -i 's/{pattern}/a {op} b/' calc.py"),
        metadata={"domain": "code", "source": "drills"},
    )


def load_drills(*, name: str = "drills") -> TaskList:
    """The 16 drills, ``files`` first, then ``code`` (see the module docstring)."""
    tasks = [_files_task(*pair) for pair in FILES] + [_code_task(*combo) for combo in CODE]
    for task in tasks:
        check_verifier(task.verifier, f"dataset {name!r}", task.id)
    return TaskList(name, tasks)
