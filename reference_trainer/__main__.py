"""``python -m reference_trainer pipeline CONFIG.toml``: the specialize-then-unify recipe from one config.

Prints the pass-rate table (a row per model, a column per domain) at the end; run it again to
resume (finished stages are skipped). See :mod:`reference_trainer.pipeline` for the config.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from kwaigym.errors import KwaigymError
from kwaigym.interrupt import sigterm_as_interrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m reference_trainer", description=__doc__.split("\n", 1)[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    pipeline = commands.add_parser(
        "pipeline", help="SFT and RL experts per domain, then OPD into one student"
    )
    pipeline.add_argument("config", help="the pipeline's TOML file")
    pipeline.add_argument("--out", help="run directory (overrides the config's out)")
    args = parser.parse_args(argv)
    sigterm_as_interrupt()
    try:
        import attrs

        from reference_trainer.pipeline import Pipeline, PipelineConfig, format_comparisons, format_table

        config = PipelineConfig.from_toml(args.config)
        if args.out:
            config = attrs.evolve(config, out=args.out)
        table = Pipeline(config, log=lambda line: print(line, flush=True)).run()
    except KwaigymError as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the episodes in flight were cleaned up
        print("pipeline: interrupted; run it again to resume", file=sys.stderr)
        return 130
    print("\npass rate (episodes) per domain:")
    print(format_table(table))
    if lines := format_comparisons(table):
        print(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
