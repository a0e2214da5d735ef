"""Specialize, then unify: SFT and RL experts per domain, fused into one student by On-Policy Distillation.

``python -m reference_trainer pipeline CONFIG.toml`` runs, from one config:

1. ``collect``: reference-solution (oracle) episodes of every domain's tasks, through the domain's
   agent, as SFT data;
2. ``sft``: per domain, the base model fine-tuned on that domain's episodes (the SFT expert), and
   the student's starting point fine-tuned on all of them (``sft-all``);
3. ``rl``: per domain, RL from the SFT expert on the domain's tasks (the RL expert);
4. ``eval``: every model (base, experts, student) on every domain: pass rate at the sampling
   temperature, over ``eval.samples`` episodes per task;
5. ``opd``: the student samples on-policy on all domains; each task's teacher is the expert with
   the best measured pass rate on its domain (:func:`reference_trainer.teacher.best_experts`),
   scoring the student's tokens; its reverse KL enters the advantage jointly with RL (GRPO).

Everything lands under ``out``: ``collect/``, ``models/<name>/`` (Hugging Face directories),
``rl/<domain>/`` and ``opd/`` (training runs with checkpoints), ``eval/<model>/<domain>/``
(episode stores), ``stages.json`` (each finished stage and its wall time) and ``table.json``.
Running the same command again skips finished stages and resumes unfinished ones from their
checkpoints and episode stores. The config (all keys but ``model``, ``out`` and ``[[domains]]``
optional)::

    model = "tiny-dense"          # a preset (random weights) or a model directory
    out = "runs/pipeline"
    seed = 0
    sample_threads = 1            # torch threads while sampling (default: torch's); see LocalEngine
    [[domains]]
    name = "files"
    dataset = "drills"            # a kwaigym dataset name or path
    tasks = ["files-*"]           # ids or shell-style patterns (default: all)
    scaffold = "mini"
    [sft]   epochs, lr, max_tokens, samples (oracle episodes per task)
    [rl]    steps, group_size, lr, max_new_tokens, concurrency, advantage, updates, tree
    [opd]   the same keys, and lam (the KL weight, default 1)
    [eval]  samples, concurrency, max_new_tokens, cross (experts on other domains too)
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import math
import time
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from kwaigym.errors import ConfigError

if TYPE_CHECKING:
    from kwaigym.task import Task


def _at_least(low: float):
    def check(instance, attribute, value):
        if value < low:
            raise ConfigError(f"pipeline config: {attribute.name} must be >= {low}, got {value!r}")

    return check


ESTIMATORS = ("grpo", "dr_grpo", "reinforce")


@attrs.frozen(kw_only=True)
class Domain:
    name: str
    dataset: str
    tasks: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    """Task ids or shell-style patterns (``files-*``); empty: the whole dataset."""
    scaffold: str = "mini"


@attrs.frozen(kw_only=True)
class SFTStage:
    epochs: int = attrs.field(default=8, validator=_at_least(1))
    lr: float = attrs.field(default=3e-3, validator=_at_least(0))
    max_tokens: int = attrs.field(default=8192, validator=_at_least(2))
    samples: int = attrs.field(default=1, validator=_at_least(1))
    """Oracle episodes collected per task."""


@attrs.frozen(kw_only=True)
class RLStage:
    steps: int = attrs.field(default=4, validator=_at_least(0))
    group_size: int = attrs.field(default=4, validator=_at_least(2))
    lr: float = attrs.field(default=1e-3, validator=_at_least(0))
    max_new_tokens: int = attrs.field(default=128, validator=_at_least(1))
    concurrency: int = attrs.field(default=8, validator=_at_least(1))
    advantage: str = attrs.field(default="grpo", validator=attrs.validators.in_(ESTIMATORS))
    """The estimator (``RLConfig.advantage``): grpo, dr_grpo or reinforce."""
    updates: int = attrs.field(default=1, validator=_at_least(1))
    """Optimizer steps per rollout batch (``RLConfig.updates``)."""
    tree: bool = attrs.field(default=False, validator=attrs.validators.instance_of(bool))
    """Train over the batch's prefix tree (``RLConfig.tree``): a group's samples share their prompt,
    which is then computed once; on the CPU demo an update runs about 3.5x faster."""


@attrs.frozen(kw_only=True)
class OPDStage(RLStage):
    lam: float = attrs.field(default=1.0, validator=_at_least(0))


@attrs.frozen(kw_only=True)
class EvalStage:
    samples: int = attrs.field(default=4, validator=_at_least(1))
    concurrency: int = attrs.field(default=8, validator=_at_least(1))
    max_new_tokens: int = attrs.field(default=128, validator=_at_least(1))
    cross: bool = False
    """Also evaluate each expert on the other domains (the table's full matrix; costs episodes)."""


@attrs.frozen(kw_only=True)
class PipelineConfig:
    model: str
    out: Path = attrs.field(converter=Path)
    domains: tuple[Domain, ...] = attrs.field(converter=tuple)
    seed: int = 0
    sample_threads: int | None = attrs.field(
        default=None,
        validator=attrs.validators.optional([attrs.validators.instance_of(int), _at_least(1)]),
    )
    """torch's intra-op threads while a local engine samples (RL, OPD and eval rollouts): 1 on a
    small CPU machine, whose other cores the sandboxes need. None: torch's setting."""
    sft: SFTStage = attrs.Factory(SFTStage)
    rl: RLStage = attrs.Factory(RLStage)
    opd: OPDStage = attrs.Factory(OPDStage)
    eval: EvalStage = attrs.Factory(EvalStage)

    def __attrs_post_init__(self):
        names = [d.name for d in self.domains]
        if not names or len(set(names)) != len(names) or "all" in names:
            raise ConfigError(
                f"pipeline config: give [[domains]] with distinct names (not 'all'), got {names}"
            )

    @classmethod
    def from_toml(cls, path: str | Path) -> PipelineConfig:
        """The config in ``path``; ``out`` relative to the current directory; unknown keys are errors."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"pipeline config {path}: no such file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"pipeline config {path}: not valid TOML: {exc}") from None
        return cls.from_dict(data, where=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, where: str = "pipeline config") -> PipelineConfig:
        stages = {"sft": SFTStage, "rl": RLStage, "opd": OPDStage, "eval": EvalStage}
        known = {"model", "out", "seed", "sample_threads", "domains", *stages}
        if unknown := sorted(set(data) - known):
            raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
        for key in ("model", "out", "domains"):
            if key not in data:
                raise ConfigError(f"{where}: missing {key!r}")
        try:
            domains = [Domain(**d) for d in data["domains"]]
            parts = {k: kind(**data[k]) for k, kind in stages.items() if k in data}
            return cls(model=data["model"], out=data["out"], domains=domains, seed=data.get("seed", 0),
                       sample_threads=data.get("sample_threads"), **parts)  # fmt: skip
        except (TypeError, ValueError) as exc:  # a missing/unknown key, or a value out of its choices
            raise ConfigError(f"{where}: {exc.args[0]}") from None


def domain_tasks(domain: Domain) -> list[Task]:
    """The domain's tasks, in dataset order; a pattern matching nothing is an error."""
    from kwaigym.datasets import load_dataset

    tasks = list(load_dataset(domain.dataset))
    if not domain.tasks:
        return tasks
    chosen = [t for t in tasks if any(fnmatch.fnmatchcase(t.id, p) for p in domain.tasks)]
    if unmatched := [p for p in domain.tasks if not any(fnmatch.fnmatchcase(t.id, p) for t in tasks)]:
        raise ConfigError(f"domain {domain.name!r}: no task of {domain.dataset!r} matches {unmatched}")
    return chosen


class Pipeline:
    """One run of the recipe (see the module docstring); ``run()`` does what is left of it."""

    def __init__(self, config: PipelineConfig, *, log: Callable[[str], None] = print, backend=None):
        self.config = config
        self.backend = backend  # a PodmanBackend to share (default: each rollout's own)
        self.out = config.out
        self.log = log
        self.tasks = {d.name: domain_tasks(d) for d in config.domains}
        self.domain_of = {t.id: d for d in config.domains for t in self.tasks[d.name]}
        self.stages_path = self.out / "stages.json"

    # -- bookkeeping ----------------------------------------------------------------------------

    def finished(self) -> dict[str, Any]:
        return json.loads(self.stages_path.read_text()) if self.stages_path.is_file() else {}

    async def _stage(self, name: str, run: Callable[[], Any]) -> Any:
        """Run stage ``name`` unless it finished before; record its wall time and result."""
        done = self.finished()
        if name in done:
            self.log(f"[{name}] done before ({done[name]['wall_s']:.1f} s), skipped")
            return done[name].get("result")
        self.log(f"[{name}] ...")
        started = time.perf_counter()
        result = run()
        if asyncio.iscoroutine(result):
            result = await result
        done = self.finished()
        done[name] = {"wall_s": round(time.perf_counter() - started, 2), "result": result}
        tmp = self.stages_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(done, indent=1))
        tmp.replace(self.stages_path)
        self.log(f"[{name}] finished in {done[name]['wall_s']:.1f} s")
        return result

    def model_path(self, name: str) -> Path:
        return self.out / "models" / name

    # -- the stages -----------------------------------------------------------------------------

    def run(self) -> dict[str, dict[str, Any]]:
        """Every stage not finished yet; returns the pass-rate table (see :meth:`table`)."""
        return asyncio.run(self.arun())

    async def arun(self) -> dict[str, dict[str, Any]]:
        """:meth:`run` in a running event loop."""
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar per model load and save would drown the stage log
        self.out.mkdir(parents=True, exist_ok=True)
        domains = [d.name for d in self.config.domains]
        await self._stage("base", self._base)
        await self._stage("collect", self._collect)
        for name in (*domains, "all"):
            await self._stage(f"sft:{name}", lambda name=name: self._sft(name))
        for name in domains:
            await self._stage(f"rl:{name}", lambda name=name: self._rl(name))
        experts = [f"{kind}-{d}" for d in domains for kind in ("sft", "rl")]
        for model in ("base", *experts):
            await self._stage(f"eval:{model}", lambda model=model: self._eval(model))
        await self._stage("opd", self._opd)
        await self._stage("eval:student", lambda: self._eval("student"))
        table = self.table()
        (self.out / "table.json").write_text(json.dumps(table, indent=1))
        return table

    def _base(self) -> str:
        from reference_trainer.train import model_dir

        return str(model_dir(self.config.model, self.out, seed=self.config.seed))  # a preset: out/initial

    def base_path(self) -> Path:
        return Path(self.finished()["base"]["result"])

    async def _collect(self) -> dict[str, float]:
        """Oracle episodes per domain (SFT data); returns each domain's pass rate (a task check)."""
        from kwaigym.rollout import rollout

        rates = {}
        for domain in self.config.domains:
            where = self.out / "collect" / domain.name
            results = await rollout(self.tasks[domain.name], [domain.scaffold], "oracle", out=where,
                                    samples=self.config.sft.samples, concurrency=self.config.eval.concurrency,
                                    show_progress=False, backend=self.backend)  # fmt: skip
            rates[domain.name] = rate = _pass_rate(_records(where))
            self.log(f"  collect {domain.name}: {len(results)} new episodes, oracle pass rate {rate:.2f}")
        return rates

    def _sft(self, name: str) -> str:
        """SFT of the base on one domain's oracle episodes (``all``: every domain's)."""
        from transformers import AutoTokenizer

        from reference_trainer.checkpoint import export_hf
        from reference_trainer.model import load_model
        from reference_trainer.sft import SFTConfig, train_sft

        domains = [d.name for d in self.config.domains] if name == "all" else [name]
        records = [r for d in domains for r in _records(self.out / "collect" / d)]
        base = self.base_path()
        model, tokenizer = load_model(base), AutoTokenizer.from_pretrained(base)
        s = self.config.sft
        config = SFTConfig(lr=s.lr, epochs=s.epochs, max_tokens=s.max_tokens, seed=self.config.seed)
        history = train_sft(model, tokenizer, records, config, log=lambda line: None)
        self.log(f"  sft {name}: {len(history)} steps, last loss {history[-1]['loss']:.4f}")
        return str(export_hf(self.model_path(f"sft-{name}"), model, tokenizer))

    async def _train(self, run_dir: Path, start: Path, tasks: Sequence[Task], stage: RLStage, **extra) -> str:
        """``stage.steps`` of training from ``start`` in ``run_dir``; the trained model (``start``
        itself when there are no steps)."""
        from reference_trainer.rl import RLConfig
        from reference_trainer.train import TrainConfig, train

        rl = RLConfig(loss="grpo", group_size=stage.group_size, lr=stage.lr, seed=self.config.seed,
                      max_new_tokens=stage.max_new_tokens, concurrency=stage.concurrency,
                      advantage=stage.advantage, updates=stage.updates, tree=stage.tree,
                      sample_threads=self.config.sample_threads,
                      **({"opd_lambda": stage.lam} if isinstance(stage, OPDStage) else {}))  # fmt: skip
        if not stage.steps:
            return str(start)
        config = TrainConfig(model=str(start), out=run_dir, steps=stage.steps, save_every=1, rl=rl)
        scaffold_for = lambda task: self.domain_of[task.id].scaffold  # noqa: E731
        await train(config, tasks=tasks, scaffold_for=scaffold_for, console=_Quiet(self.log),
                    backend=self.backend, **extra)  # fmt: skip
        return str(run_dir / "final")

    async def _rl(self, name: str) -> str:
        start = Path(self.finished()[f"sft:{name}"]["result"])
        final = await self._train(self.out / "rl" / name, start, self.tasks[name], self.config.rl)
        return _link(self.model_path(f"rl-{name}"), Path(final))

    async def _eval(self, model: str) -> dict[str, dict[str, float]]:
        """``model`` on every domain (an expert only on its own unless ``eval.cross``): pass rate and
        episode count."""
        from kwaigym.policies import Policy
        from kwaigym.rollout import rollout
        from reference_trainer.engine.local import LocalEngine, LocalResponder

        path = self.base_path() if model == "base" else self.model_path(model)
        e = self.config.eval
        engine = LocalEngine(path, max_new_tokens=e.max_new_tokens, seed=self.config.seed,
                             threads=self.config.sample_threads)  # fmt: skip
        policy = lambda task, scaffold: Policy(LocalResponder(engine))  # noqa: E731
        out = {}
        own = model.split("-", 1)[1] if model.startswith(("sft-", "rl-")) else None
        for domain in self.config.domains:
            if own is not None and domain.name != own and not e.cross:
                continue
            where = self.out / "eval" / model / domain.name
            await rollout(self.tasks[domain.name], [domain.scaffold], policy, samples=e.samples, out=where,
                          concurrency=e.concurrency, show_progress=False, backend=self.backend)  # fmt: skip
            records = _records(where)
            rate = _pass_rate(records)
            out[domain.name] = {"pass_rate": rate, "episodes": len(records)}
            self.log(f"  {model} on {domain.name}: {rate:.2f} over {len(records)} episodes")
        return out

    def teachers(self) -> dict[str, str]:
        """Per domain, the expert (``sft-*``/``rl-*``) with the best measured pass rate there."""
        from reference_trainer.teacher import best_experts

        done = self.finished()
        rates = {k.removeprefix("eval:"): {d: v["pass_rate"] for d, v in done[k]["result"].items()}
                 for k in done if k.startswith("eval:") and k[5:].split("-")[0] in ("sft", "rl")}  # fmt: skip
        return best_experts(rates)

    async def _opd(self) -> dict[str, Any]:
        from reference_trainer.teacher import TeacherScorer

        chosen = self.teachers()
        scorers = {
            name: TeacherScorer.load(self.model_path(name), name=name) for name in set(chosen.values())
        }
        by_domain = {d: scorers[name] for d, name in chosen.items()}
        self.log("  teachers: " + ", ".join(f"{d} <- {name}" for d, name in chosen.items()))
        tasks = [t for d in self.config.domains for t in self.tasks[d.name]]
        start = Path(self.finished()["sft:all"]["result"])
        teacher_for = lambda task_id: by_domain.get(self.domain_of[task_id].name)  # noqa: E731
        final = await self._train(self.out / "opd", start, tasks, self.config.opd, teacher_for=teacher_for)
        _link(self.model_path("student"), Path(final))
        stats = {name: attrs.asdict(s.stats) for name, s in scorers.items()}
        return {"teachers": chosen, "scoring": stats}

    # -- the result -----------------------------------------------------------------------------

    def table(self) -> dict[str, dict[str, Any]]:
        """``{model: {domain: {"pass_rate", "episodes"}}}`` for every model evaluated so far."""
        done = self.finished()
        return {k.removeprefix("eval:"): v["result"] for k, v in done.items() if k.startswith("eval:")}


def format_table(table: dict[str, dict[str, Any]]) -> str:
    """The pass-rate table as aligned text: a row per model, a column per domain (``rate (n)``)."""
    domains = sorted({d for row in table.values() for d in row})
    header = ["model", *domains]

    def cell(row, d):
        return f"{row[d]['pass_rate']:.2f} ({row[d]['episodes']})" if d in row else "-"

    rows = [header] + [[model, *(cell(row, d) for d in domains)] for model, row in table.items()]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def _passes(cell: dict[str, Any]) -> int:
    return round(cell["pass_rate"] * cell["episodes"])


def z_score(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """How many standard errors ``b``'s pass rate lies above ``a``'s (a two-proportion z-test with
    the pooled rate); None when neither has a failure, or neither a success (no spread to measure)."""
    na, nb = a["episodes"], b["episodes"]
    pooled = (_passes(a) + _passes(b)) / (na + nb) if na and nb else 0.0
    se = math.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb)) if 0 < pooled < 1 else 0.0
    return (b["pass_rate"] - a["pass_rate"]) / se if se else None


def comparisons(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per domain, what the recipe promises: RL's gain over SFT in standard errors (``rl_vs_sft_z``)
    and the student's pass rate as a share of the best expert's there (``student_share``; the best
    expert is picked as OPD picks its teacher, :func:`~reference_trainer.teacher.best_experts`)."""
    from reference_trainer.teacher import best_experts

    rates = {name: {d: cell["pass_rate"] for d, cell in row.items()}
             for name, row in table.items() if name.startswith(("sft-", "rl-"))}  # fmt: skip
    best = best_experts(rates) if any(rates.values()) else {}
    out: dict[str, dict[str, Any]] = {}
    for domain in sorted({d for row in table.values() for d in row}):
        sft, rl, student = (
            table.get(name, {}).get(domain) for name in (f"sft-{domain}", f"rl-{domain}", "student")
        )
        entry: dict[str, Any] = {}
        if sft and rl:
            entry["rl_vs_sft_z"] = z_score(sft, rl)
        if student and domain in best:
            best_rate = rates[best[domain]][domain]
            entry["best_expert"] = best[domain]
            entry["student_share"] = student["pass_rate"] / best_rate if best_rate else None
        if entry:
            out[domain] = entry
    return out


def format_comparisons(table: dict[str, dict[str, Any]]) -> str:
    """:func:`comparisons` as lines of text, with the counts behind them."""
    lines = []
    for domain, entry in comparisons(table).items():
        parts = []
        if "rl_vs_sft_z" in entry:
            sft, rl = table[f"sft-{domain}"][domain], table[f"rl-{domain}"][domain]
            z = entry["rl_vs_sft_z"]
            parts.append(f"RL {_passes(rl)}/{rl['episodes']} vs SFT {_passes(sft)}/{sft['episodes']}"
                         + (f" ({z:+.1f} standard errors)" if z is not None else ""))  # fmt: skip
        if entry.get("student_share") is not None:
            parts.append(f"student at {entry['student_share']:.0%} of {entry['best_expert']}")
        lines.append(f"{domain}: " + "; ".join(parts))
    return "\n".join(lines)


class _Quiet:
    """A console for the training loop that routes its lines to the pipeline's log, indented."""

    def __init__(self, log):
        self._log = log

    def print(self, text, *args, **kwargs):
        self._log(f"  {text}")


def _records(run_dir: Path) -> list[dict[str, Any]]:
    from kwaigym.trajectory.store import EpisodeStore

    return list(EpisodeStore(run_dir).records()) if (run_dir / "episodes.jsonl").is_file() else []


def _pass_rate(records: Sequence[dict[str, Any]]) -> float:
    """Episodes scoring 1 over all episodes (an invalid reward counts as a failure)."""
    if not records:
        return 0.0
    return sum(1 for r in records if r.get("reward_valid") and (r.get("reward") or 0) >= 1.0) / len(records)


def _link(name: Path, target: Path) -> str:
    """``models/<name>`` pointing at a trained model directory (a relative symlink)."""
    name.parent.mkdir(parents=True, exist_ok=True)
    if name.is_symlink() or name.exists():
        name.unlink()
    name.symlink_to(Path("..") / target.relative_to(name.parent.parent))
    return str(name)
