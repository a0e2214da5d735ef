"""Datasets: where tasks come from.

``load_dataset`` takes a registered name (``examples``, or one registered under the entry point
group ``kwaigym.datasets``) or a path: a directory of Harbor / Terminal-Bench 2 task directories,
or a JSON-lines file of SWE-bench instances, code-generation problems or short-answer questions.
Every loader reads and checks all of its tasks when called and returns a :class:`TaskList`.
"""

from kwaigym.datasets.base import Dataset, TaskList
from kwaigym.datasets.codegen import load_codegen, load_qa
from kwaigym.datasets.registry import available, load_dataset
from kwaigym.datasets.swebench import load_swebench
from kwaigym.datasets.taskdir import load_task, load_taskdir

__all__ = [
    "Dataset",
    "TaskList",
    "available",
    "load_codegen",
    "load_dataset",
    "load_qa",
    "load_swebench",
    "load_task",
    "load_taskdir",
]
