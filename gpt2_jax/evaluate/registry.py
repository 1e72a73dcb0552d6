"""The task registry: name -> how to run it, what data it reads and where that data comes from.

A task is a function `run(ctx, data_path, name) -> {metric: value, count: n}`. `default_file`
is the file a task looks for when `--data` names a folder holding several datasets (e.g.
`wikitext2/wiki.test.tokens` under the shared data folder).
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable

from gpt2_jax.evaluate import cbt, lambada, language_modeling, reading_qa, summarization, translation, winograd
from gpt2_jax.evaluate.errors import EvalError
from gpt2_jax.evaluate.readers import WHERE


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    run: Callable
    data: str  # what --data must be (for messages)
    default_files: tuple[str, ...] = ()  # looked up under a folder given as --data


TASKS: dict[str, Task] = {t.name: t for t in [
    Task("text", language_modeling.rolling_task(language_modeling.text_docs), WHERE["text"]),
    Task("wikitext2", language_modeling.rolling_task(language_modeling.wikitext_docs), WHERE["wikitext"],
         ("wikitext2/wiki.test.tokens", "wiki.test.tokens", "wikitext2/wiki.test.raw", "wiki.test.raw")),
    Task("wikitext103", language_modeling.rolling_task(language_modeling.wikitext_docs), WHERE["wikitext"],
         ("wikitext103/wiki.test.tokens", "wikitext-103/wiki.test.tokens", "wiki.test.tokens")),
    Task("ptb", language_modeling.rolling_task(language_modeling.ptb_docs), WHERE["ptb"],
         ("ptb/ptb.test.txt", "ptb.test.txt")),
    Task("lm1b", language_modeling.rolling_task(language_modeling.lm1b_docs), WHERE["lm1b"],
         ("lm1b/news.en.heldout-00000-of-00050", "news.en.heldout-00000-of-00050")),
    Task("enwik8", language_modeling.rolling_task(language_modeling.char_level_docs), WHERE["char"],
         ("enwik8/enwik8", "enwik8")),
    Task("text8", language_modeling.rolling_task(language_modeling.char_level_docs), WHERE["char"], ("text8/text8", "text8")),
    Task("lambada", lambada.run, WHERE["lambada"], ("lambada/lambada_test.jsonl", "lambada_test.jsonl")),
    Task("cbt-cn", cbt.run, WHERE["cbt"], ("cbt/cbtest_CN_test_2500ex.txt", "cbtest_CN_test_2500ex.txt")),
    Task("cbt-ne", cbt.run, WHERE["cbt"], ("cbt/cbtest_NE_test_2500ex.txt", "cbtest_NE_test_2500ex.txt")),
    Task("wsc273", winograd.run, WHERE["wsc"], ("wsc/WSCollection.xml", "WSCollection.xml")),
    Task("coqa", reading_qa.run_coqa, WHERE["coqa"], ("coqa/coqa-dev-v1.0.json", "coqa-dev-v1.0.json")),
    Task("nq", reading_qa.run_nq, WHERE["nq"], ("nq/nq-open-test.jsonl", "nq-open-test.jsonl")),
    Task("wmt14-en-fr", translation.runner("en"), WHERE["wmt"], ("wmt14/newstest2014.en-fr.jsonl",)),
    Task("wmt14-fr-en", translation.runner("fr"), WHERE["wmt"], ("wmt14/newstest2014.en-fr.jsonl",)),
    Task("cnndm", summarization.run, WHERE["cnndm"], ("cnndm/test.jsonl",)),
]}


def get(name: str) -> Task:
    if name not in TASKS:
        raise EvalError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[name]


def data_paths(tasks: list[Task], data: str) -> list[str]:
    """One data path per task: `--data` as a comma-separated list (one per task), one file (one
    task), or a folder in which each task finds its usual file (a folder is a corpus for `text`)."""
    parts = [p for p in data.split(",") if p]
    if len(parts) == len(tasks):
        return [_resolve(t, p) for t, p in zip(tasks, parts)]
    if len(parts) == 1:
        return [_resolve(t, parts[0]) for t in tasks]
    raise EvalError(f"--data has {len(parts)} paths for {len(tasks)} tasks; give one path per task "
                    f"(comma-separated, in --task order) or one folder that holds every task's file")


def _resolve(task: Task, path: str) -> str:
    folder = pathlib.Path(path)
    if not folder.is_dir() or task.name == "text":
        return path
    for rel in task.default_files:
        if (folder / rel).is_file():
            return str(folder / rel)
    raise EvalError(f"data folder {path!r} has none of {', '.join(task.default_files)} for task {task.name!r}; "
                    f"expected {task.data}")
