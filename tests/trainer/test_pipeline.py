"""The specialize-then-unify pipeline: its config and table, and a whole small run end to end
(real episodes of the drills tasks, real SFT, RL and OPD on a tiny model) that resumes."""

from __future__ import annotations

import json

import pytest

from kwaigym.errors import ConfigError

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
pytest.importorskip("tensorboard", reason="the trainer extra (tensorboard) is not installed")
from reference_trainer.__main__ import main  # noqa: E402
from reference_trainer.pipeline import (  # noqa: E402
    Domain,
    Pipeline,
    PipelineConfig,
    comparisons,
    domain_tasks,
    format_comparisons,
    format_table,
)

SMALL = {
    "model": "tiny-dense",
    "sample_threads": 1,
    "domains": [
        {"name": "files", "dataset": "drills", "tasks": ["files-notes", "files-todo"]},
        {"name": "code", "dataset": "drills", "tasks": ["code-add-*", "code-mul-*"]},
    ],
    "sft": {"epochs": 2},
    "rl": {
        "steps": 1,
        "group_size": 2,
        "max_new_tokens": 16,
        "concurrency": 4,
        "advantage": "reinforce",
        "updates": 2,
        "tree": True,
    },
    "opd": {"steps": 1, "group_size": 2, "max_new_tokens": 16, "concurrency": 4},
    "eval": {"samples": 1, "max_new_tokens": 16},
}


def test_config_from_toml_and_its_errors(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('model = "tiny-dense"\nout = "runs/p"\nsample_threads = 1\n'
                    '[[domains]]\nname = "a"\ndataset = "drills"\n'
                    '[rl]\nsteps = 3\ntree = true\n[opd]\nlam = 0.5\n')  # fmt: skip
    config = PipelineConfig.from_toml(path)
    assert (config.rl.steps, config.opd.lam, config.opd.steps, config.domains[0].scaffold) == (
        3,
        0.5,
        4,
        "mini",
    )
    assert (config.rl.tree, config.opd.tree, config.sample_threads) == (True, False, 1)
    bad = {
        'model = "m"\nout = "o"\ndomains = []\n': "distinct names",
        'model = "m"\nout = "o"\n[[domains]]\nname = "a"\ndataset = "d"\n[rl]\nstep = 1\n': "step",
        'model = "m"\nout = "o"\n[[domains]]\nname = "a"\ndataset = "d"\n[rl]\nsteps = -1\n': ">= 0",
        'model = "m"\nout = "o"\nepochs = 2\n': "unknown key",
        'out = "o"\n[[domains]]\nname = "a"\ndataset = "d"\n': "missing 'model'",
        "model = \n": "not valid TOML",
        'model = "m"\nout = "o"\n[[domains]]\nname = "a"\ndataset = "d"\n[rl]\nadvantage = 1\n': "advantage",
        'model = "m"\nout = "o"\n[[domains]]\nname = "a"\ndataset = "d"\n[opd]\ntree = "yes"\n': "tree",
        'model="m"\nout="o"\nsample_threads=0\n[[domains]]\nname="a"\ndataset="d"\n': "sample_threads",
    }
    for text, message in bad.items():
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            PipelineConfig.from_toml(path)
    with pytest.raises(ConfigError, match="no such file"):
        PipelineConfig.from_toml(tmp_path / "missing.toml")


def test_domain_patterns_and_the_table():
    assert [t.id for t in domain_tasks(Domain(name="f", dataset="drills", tasks=("files-n*",)))] == [
        "files-notes"
    ]
    with pytest.raises(ConfigError, match=r"no task of 'drills' matches \['nope-\*'\]"):
        domain_tasks(Domain(name="f", dataset="drills", tasks=("nope-*",)))
    table = {"base": {"a": {"pass_rate": 0.0, "episodes": 8}, "b": {"pass_rate": 0.25, "episodes": 8}},
             "rl-a": {"a": {"pass_rate": 0.875, "episodes": 8}}}  # fmt: skip
    assert format_table(table).splitlines() == [
        "model  a         b",
        "base   0.00 (8)  0.25 (8)",
        "rl-a   0.88 (8)  -",
    ]


def test_comparisons_count_standard_errors_and_the_student_share():
    """RL over SFT as a two-proportion z (pooled rate), and the student against the best expert."""

    def cell(passes, n=64):
        return {"pass_rate": passes / n, "episodes": n}

    table = {"sft-files": {"files": cell(53)}, "rl-files": {"files": cell(59)},
             "sft-code": {"code": cell(64)}, "rl-code": {"code": cell(64)},
             "student": {"files": cell(62), "code": cell(48)}}  # fmt: skip
    got = comparisons(table)
    pooled = 112 / 128
    assert got["files"]["rl_vs_sft_z"] == pytest.approx((6 / 64) / (pooled * (1 - pooled) * 2 / 64) ** 0.5)
    assert round(got["files"]["rl_vs_sft_z"], 2) == 1.6
    assert got["code"]["rl_vs_sft_z"] is None  # both 64/64: no spread to measure a gain against
    assert (got["files"]["best_expert"], got["files"]["student_share"]) == (
        "rl-files",
        pytest.approx(62 / 59),
    )
    assert (got["code"]["best_expert"], got["code"]["student_share"]) == ("sft-code", 0.75)
    assert format_comparisons(table).splitlines() == [
        "code: RL 64/64 vs SFT 64/64; student at 75% of sft-code",
        "files: RL 59/64 vs SFT 53/64 (+1.6 standard errors); student at 105% of rl-files",
    ]
    assert comparisons({"base": {"files": cell(0)}}) == {}


@pytest.mark.podman
def test_small_pipeline_runs_every_stage_and_resumes(tmp_path, capsys):
    """Every stage on 2 + 2 drills tasks; the table has every model; a rerun does nothing again, and
    after its last two stages are forgotten, only those run (the episodes before are kept)."""
    (tmp_path / "p.toml").write_text(_toml({**SMALL, "out": str(tmp_path / "run")}))
    assert main(["pipeline", str(tmp_path / "p.toml")]) == 0
    out = capsys.readouterr().out
    assert "pass rate (episodes) per domain:" in out and "student" in out
    run = tmp_path / "run"
    stages = json.loads((run / "stages.json").read_text())
    expected = ["base", "collect", "sft:files", "sft:code", "sft:all", "rl:files", "rl:code", "eval:base",
                "eval:sft-files", "eval:rl-files", "eval:sft-code", "eval:rl-code", "opd",
                "eval:student"]  # fmt: skip
    assert list(stages) == expected
    assert stages["collect"]["result"] == {"files": 1.0, "code": 1.0}  # the oracle solves every task
    table = json.loads((run / "table.json").read_text())
    assert table["base"].keys() == table["student"].keys() == {"files", "code"}
    assert table["rl-files"].keys() == {"files"} and table["student"]["code"]["episodes"] == 2
    teachers = stages["opd"]["result"]["teachers"]
    assert teachers["files"] in ("sft-files", "rl-files") and teachers["code"] in ("sft-code", "rl-code")
    scoring = stages["opd"]["result"]["scoring"]
    assert sum(s["sequences"] for s in scoring.values()) > 0
    for name in ("sft-files", "rl-code", "student"):
        assert (run / "models" / name / "config.json").is_file(), name
    episodes = len((run / "collect" / "files" / "episodes.jsonl").read_text().splitlines())

    logs: list[str] = []
    Pipeline(PipelineConfig.from_dict({**SMALL, "out": str(run)}), log=logs.append).run()
    assert sum("skipped" in line for line in logs) == len(expected)

    stages = json.loads((run / "stages.json").read_text())
    for name in ("opd", "eval:student"):
        del stages[name]
    (run / "stages.json").write_text(json.dumps(stages))
    logs.clear()
    Pipeline(PipelineConfig.from_dict({**SMALL, "out": str(run)}), log=logs.append).run()
    ran = [line for line in logs if line.endswith("...")]
    assert ran == ["[opd] ...", "[eval:student] ..."], logs
    assert len((run / "collect" / "files" / "episodes.jsonl").read_text().splitlines()) == episodes


def test_cli_reports_a_bad_config(tmp_path, capsys):
    (tmp_path / "p.toml").write_text('model = "m"\n')
    assert main(["pipeline", str(tmp_path / "p.toml")]) == 2
    assert "missing 'out'" in capsys.readouterr().err


def _toml(data) -> str:
    import tomli_w

    return tomli_w.dumps(data)
