"""The ``kwaigym`` command.

    kwaigym setup                         prepare this host (root): podman, config, base image
    kwaigym images list [--all]           kwaigym's images (or all)
    kwaigym images bootstrap              build the Debian base image from Debian's archive (cached)
    kwaigym images build DIR [-f FILE]    build a Containerfile context (content-addressed, cached)
    kwaigym sandbox run [--image I] CMD   run one command in a fresh sandbox, print its output
    kwaigym sandbox list                  kwaigym's containers and whether they are leftovers
    kwaigym sandbox prune [--all]         remove leftovers of crashed runs (or every sandbox)
    kwaigym scaffolds list|install NAME...|all|check NAME
                                          agent adapters; check runs one with a scripted policy
    kwaigym eval --dataset D --scaffold S[,S...] --policy P [--concurrency N] [--out DIR]
                                          run episodes (oracle, null, openai:URL, anthropic), resumable
    kwaigym report RUN_DIR [-o FILE]      static HTML report of a run: summary, plots, trajectory viewer
    kwaigym export NAME RUN_DIR [-o FILE]  training rows from a run (calls, turns, tree, sft) as JSONL
    kwaigym validate DATASET [--concurrency N] [--repeat K]
                                          reference solution must score 1, empty attempt below 1
    kwaigym proxy serve --echo|--upstream URL [--record FILE]
                                          the interception proxy for agents started by hand

``--url`` selects a podman service (``tcp://``, ``ssh://``, ``unix://``); the default is a
private local one, started for the command and stopped after it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import uuid

from kwaigym.errors import KwaigymError
from kwaigym.interrupt import sigterm_as_interrupt


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kwaigym", description="Agentic-coding RL environments in sandboxes."
    )
    parser.add_argument("--url", help="podman service URL (default: a private local service)")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("setup", help="prepare this host: packages, podman config, base image (root)")

    images = sub.add_parser("images", help="list, bootstrap and build sandbox images").add_subparsers(
        dest="action", required=True
    )
    ls = images.add_parser("list", help="kwaigym's images")
    ls.add_argument("--all", action="store_true", help="every image on the host")
    boot = images.add_parser("bootstrap", help="Debian base image from Debian's archive (cached)")
    boot.add_argument("--suite", default="bookworm")
    boot.add_argument("--package", action="append", dest="packages", help="package to include (repeatable)")
    build = images.add_parser("build", help="build a Containerfile context (content-addressed tag)")
    build.add_argument("context")
    build.add_argument("-f", "--file", help="Containerfile (default: Containerfile or Dockerfile in context)")
    build.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE")

    scaffolds = sub.add_parser("scaffolds", help="list, install and check agent adapters").add_subparsers(
        dest="action", required=True
    )
    scaffolds.add_parser("list", help="known adapters")
    scaffolds.add_parser("install", help="build adapters' bundles (cached)").add_argument(
        "names", nargs="+", metavar="NAME", help="adapter names, or `all`"
    )
    scaffolds.add_parser("check", help="run an adapter once with a scripted policy").add_argument("name")

    evaluate = sub.add_parser("eval", help="run episodes of a dataset with scaffolds and a policy")
    evaluate.add_argument("--dataset", default="examples", help="dataset path or name (default: examples)")
    evaluate.add_argument(
        "--scaffold", default="mini", help="adapter name(s), comma-separated (default: mini)"
    )
    evaluate.add_argument(
        "--policy", default="oracle", help="oracle, null, openai:URL, anthropic or replay:DIR"
    )
    evaluate.add_argument("--concurrency", type=int, default=4, help="episodes at once (default 4)")
    evaluate.add_argument("--samples", type=int, default=1, help="episodes per task and scaffold")
    evaluate.add_argument("--out", help="directory for episodes.jsonl (a rerun resumes it)")
    evaluate.add_argument("--task", action="append", dest="tasks", metavar="ID", help="only these tasks")
    evaluate.add_argument("--max-turns", type=int, help="main-loop calls per episode")

    report = sub.add_parser("report", help="write a static HTML report of a run directory")
    report.add_argument("run_dir", help="a run's --out directory (holds episodes.jsonl)")
    report.add_argument("-o", "--out", default=None, help="output file (default RUN_DIR/report.html)")

    export = sub.add_parser("export", help="export a run's episodes for training (calls, turns, tree, sft)")
    export.add_argument("name", help="exporter name (calls, turns, tree, sft, or a registered one)")
    export.add_argument("run_dir", help="a run's --out directory (holds episodes.jsonl)")
    export.add_argument("-o", "--out", help="output JSONL file (default: stdout)")

    validate = sub.add_parser(
        "validate", help="check a dataset's tasks: reference scores 1, empty attempt below 1, no flaky tests"
    )
    validate.add_argument(
        "dataset", help="a task directory, a dataset directory or file, or a name (examples)"
    )
    validate.add_argument("--concurrency", type=int, default=4, help="sandboxes at once (default 4)")
    validate.add_argument("--repeat", type=int, default=1, help="runs of each attempt, to find flaky tests")
    validate.add_argument("--task", action="append", dest="tasks", metavar="ID", help="only these tasks")

    proxy = sub.add_parser("proxy", help="the interception proxy").add_subparsers(
        dest="action", required=True
    )
    from kwaigym.proxy import serve

    serve.add_arguments(proxy.add_parser("serve", help="run the proxy for agents started by hand"))

    sandbox = sub.add_parser("sandbox", help="run, list and prune sandboxes").add_subparsers(
        dest="action", required=True
    )
    run = sandbox.add_parser("run", help="run one command in a fresh sandbox")
    run.add_argument("--image", help="image (default: the base image)")
    run.add_argument("--network", choices=("none", "open"), default="none")
    run.add_argument("--timeout", type=float, default=60.0)
    run.add_argument("cmd", help="shell command")
    sandbox.add_parser("list", help="kwaigym's containers")
    prune = sandbox.add_parser("prune", help="remove leftovers of crashed runs")
    prune.add_argument("--all", action="store_true", help="remove every kwaigym container, live or not")
    return parser


async def _images(args, service) -> int:
    from kwaigym.sandbox.images import DEFAULT_PACKAGES, ImageStore

    store = ImageStore(service)
    if args.action == "list":
        for info in await store.list(all=args.all):
            print(f"{info.ref:60} {info.id:14} {info.size_mb:8.1f} MB  {info.created:%Y-%m-%d %H:%M}")
    elif args.action == "bootstrap":
        print(await store.bootstrap(suite=args.suite, packages=tuple(args.packages or DEFAULT_PACKAGES)))
    elif args.action == "build":
        pairs = [a.partition("=") for a in args.build_arg]
        print(
            await store.build(args.context, containerfile=args.file, build_args={k: v for k, _, v in pairs})
        )
    return 0


async def _sandbox(args, service) -> int:
    from kwaigym.sandbox import NetworkPolicy, PodmanBackend, SandboxSpec
    from kwaigym.sandbox.images import ImageStore
    from kwaigym.sandbox.reaper import list_sandboxes, prune

    if args.action == "list":
        for box in await list_sandboxes(service):
            print(f"{box.id[:12]}  episode={box.episode_id}  owner={box.owner}  {box.reason or 'live'}")
    elif args.action == "prune":
        removed = await prune(service, everything=args.all)
        print(f"removed {len(removed)} sandbox(es)")
    elif args.action == "run":
        image = args.image or await ImageStore(service).base_image()
        spec = SandboxSpec(
            image=image, episode_id=f"cli-{uuid.uuid4().hex[:8]}", network=NetworkPolicy(mode=args.network)
        )
        async with PodmanBackend(service) as backend, backend.sandbox(spec) as sb:
            result = await sb.exec(args.cmd, timeout=args.timeout)
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        return result.exit_code
    return 0


async def _scaffolds(args, service) -> int:
    from kwaigym.sandbox import PodmanBackend
    from kwaigym.sandbox.images import ImageStore
    from scaffolds import registry
    from scaffolds.check import check

    if args.action == "list":
        for name, cls in sorted(registry.available().items()):
            scaffold = cls()  # the wire format may depend on the adapter's options
            print(f"{name:14} {scaffold.wire_format:18} {(cls.__doc__ or '').strip().splitlines()[0]}")
        return 0
    if args.action == "install":
        names = sorted(registry.available()) if args.names == ["all"] else args.names
        for name in names:
            print(f"{name}: {await asyncio.to_thread(registry.get(name).install)}")
        return 0
    scaffold = registry.get(args.name)
    image = await ImageStore(service).base_image()
    async with PodmanBackend(service) as backend:
        report = await check(scaffold, image=image, backend=backend)
    for call in report.calls:
        sent = call.request.messages[-1].text[:60] if call.request and call.request.messages else ""
        answer = (call.completion.tool_calls or call.completion.text) if call.completion else call.error
        tools = len(call.request.tools) if call.request else 0
        loop = call.kind + (f":{call.agent_id}" if call.agent_id else "")
        print(f"{call.path:28} {loop:10} tools={tools:<3} last={sent!r} -> {answer!r}")
    verdict = "PASS" if report.passed else "FAIL"
    file_state = "written" if report.file_content else "missing"
    outcome = report.outcome
    summary = outcome.final_message[:200]
    print(f"{scaffold.name}: {verdict} (exit {outcome.exit_code}, file {file_state}): {summary}")
    return 0 if report.passed else 1


async def _eval(args, service) -> int:
    from rich.console import Console
    from rich.table import Table

    from kwaigym.datasets import load_dataset
    from kwaigym.episode import OK, Limits
    from kwaigym.rollout import rollout
    from kwaigym.sandbox import PodmanBackend
    from kwaigym.trajectory import EpisodeStore

    dataset = load_dataset(args.dataset)
    tasks = [dataset.get(t) for t in args.tasks] if args.tasks else list(dataset)
    scaffolds = [s.strip() for s in args.scaffold.split(",") if s.strip()]
    async with PodmanBackend(service) as backend:
        results = await rollout(
            tasks, scaffolds, args.policy, concurrency=args.concurrency, samples=args.samples, out=args.out,
            limits=Limits(max_turns=args.max_turns), backend=backend,
        )  # fmt: skip
    rows = [r for r in EpisodeStore(args.out).records()] if args.out else [
        {"task_id": r.task_id, "scaffold": r.scaffold, "status": r.status, "reward": r.reward,
         "reward_valid": r.reward_valid, "turns": r.turns, "duration_s": r.duration_s, "error": r.error}
        for r in results
    ]  # fmt: skip
    table = Table(title=f"{dataset.name} x {', '.join(scaffolds)} x {args.policy}")
    for column in ("task", "scaffold", "status", "reward", "turns", "time", "error"):
        table.add_column(column)
    for r in sorted(rows, key=lambda r: (r["task_id"], r["scaffold"])):
        reward = f"{r['reward']:g}" if r["reward_valid"] else "invalid"
        table.add_row(r["task_id"], r["scaffold"], r["status"], reward, str(r["turns"]),
                      f"{r['duration_s']:.1f} s", (r.get("error") or "")[:60])  # fmt: skip
    valid = [r for r in rows if r["reward_valid"]]
    passed = sum(r["reward"] >= 1.0 for r in valid)
    table.caption = (
        f"pass rate {passed}/{len(valid)} of scored episodes; {sum(r['status'] != OK for r in rows)} not ok"
    )
    Console().print(table)
    return 0


async def _validate(args, service) -> int:
    from rich.console import Console

    from kwaigym.datasets import load_dataset
    from kwaigym.sandbox import PodmanBackend
    from kwaigym.sandbox.images import ImageStore
    from kwaigym.validate import render, validate_tasks

    dataset = load_dataset(args.dataset)
    tasks = [dataset.get(t) for t in args.tasks] if args.tasks else list(dataset)
    console = Console()

    def progress(verdict) -> None:
        mark = "[green]valid[/]" if verdict.valid else "[red]INVALID[/]"
        console.print(f"{verdict.task_id}: {mark} ({verdict.duration_s:.1f} s)")

    async with PodmanBackend(service) as backend:
        verdicts = await validate_tasks(
            tasks, concurrency=args.concurrency, repeat=args.repeat, backend=backend,
            images=ImageStore(service), on_done=progress,
        )  # fmt: skip
    console.print(render(verdicts, title=f"{dataset.name}: {len(tasks)} task(s), repeat {args.repeat}"))
    return 0 if all(v.valid for v in verdicts) else 1


def _offline(args) -> int:
    """Commands that only read files (no podman service, no event loop)."""
    if args.command == "report":
        from kwaigym.report import write_report

        print(write_report(args.run_dir, args.out))
        return 0
    import json

    from kwaigym.trajectory import EpisodeStore, exporter

    rows = exporter(args.name)(EpisodeStore(args.run_dir).records())
    with open(args.out, "w") if args.out else contextlib.nullcontext(sys.stdout) as out:
        for row in rows:
            out.write(json.dumps(row) + "\n")
    return 0


async def _main(args) -> int:
    from kwaigym.sandbox.service import PodmanService

    if args.command == "proxy":
        from kwaigym.proxy import serve

        return await serve.serve(args)

    if args.command == "setup":
        from kwaigym.host import setup_host

        setup_host()
    async with PodmanService(args.url) as service:
        if args.command == "setup":
            from kwaigym.sandbox.images import ImageStore

            print(f"base image: {await ImageStore(service).base_image()}")
            return 0
        handler = {
            "images": _images,
            "sandbox": _sandbox,
            "scaffolds": _scaffolds,
            "validate": _validate,
            "eval": _eval,
        }[args.command]
        return await handler(args, service)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sigterm_as_interrupt()
    try:
        if args.command in ("report", "export"):
            return _offline(args)
        return asyncio.run(_main(args))
    except KwaigymError as exc:
        print(f"kwaigym: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
