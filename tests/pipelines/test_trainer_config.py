"""The config's ``trainer`` key: checked against the space at load, compiled into the train step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.contract import trial_id
from pipelines.build.argo import build
from pipelines.config import ConfigError, parse_config
from pipelines.validate import validate_document
from tests.support.kfp_package import compiled, container
from tests.support.sweep_compiled import templates

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / "pipelines" / "sweep.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def problems(raw: dict[str, Any], **changes: Any) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config({**raw, **changes})
    return str(info.value)


def test_the_default_sweep_names_the_reference_trainer_and_imports_nothing_heavy() -> None:
    code = (
        "import sys; from pipelines.config import load_config; c = load_config('sweep');"
        "print(c.trainer.function, 'torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["components.trainers.digits:train", "False"]


def test_bad_trainers_are_config_errors_naming_the_key(raw: dict[str, Any]) -> None:
    assert "trainer: set exactly one of 'function' and 'command'" in problems(raw, trainer={})
    both = {"function": "components.trainers.digits:train", "command": ["x"]}
    assert "trainer: set exactly one" in problems(raw, trainer=both)
    bad = problems(raw, trainer={"command": ["prog", "--lr", "{lr}", "--eta={eta}"]})
    assert "trainer.command[3]: placeholder {eta} is not a param of the search space" in bad
    assert "command[2]" not in bad
    declared = problems(raw, trainer={"command": ["prog"], "params": ["lr", "hidden", "seed"]})
    assert "param 'batch_size' is not in trainer.params" in declared
    missing = problems(raw, trainer={"function": "no_such_module.train:train"})
    assert (
        "trainer.function: 'no_such_module.train:train': module 'no_such_module.train'" in missing
    )
    assert "does not import" in missing
    assert "is not callable" in problems(
        raw, trainer={"function": "components.trainers.digits:log"}
    )
    assert "has no 'fit'" in problems(raw, trainer={"function": "components.trainers.digits:fit"})
    space = {**raw["search"]["space"], "fixed": {"steps": 10, "seed": 0, "momentum": 0.9}}
    undeclared = problems(raw, search={**raw["search"], "space": space})
    assert "search.space: param 'momentum' is not declared by components.trainers.digits:train" in (
        undeclared
    )
    space = {**raw["search"]["space"], "fixed": {"steps": 10}}
    required = problems(raw, search={**raw["search"], "space": space})
    assert "trainer.function: components.trainers.digits:train requires param 'seed'" in required


def test_the_trial_runs_in_the_trainer_image_with_its_command(
    raw: dict[str, Any], tmp_path: Path
) -> None:
    command = ["python", "-u", "boost.py", "--lr", "{lr}", "--hidden", "{hidden}"]
    trainer = {"command": command, "image": "ghcr.io/team/boost:1.2"}
    cfg = parse_config({**raw, "trainer": trainer})
    doc = build(cfg).to_dict()
    assert validate_document(doc) == []
    for name, t in templates(doc).items():
        if "container" not in t:
            continue
        want = "ghcr.io/team/boost:1.2" if name == "train" else raw["image"]
        assert t["container"]["image"] == want, name
        env = {e["name"]: e.get("value") for e in t["container"]["env"]}
        assert env["SWEEPYARD_IMAGE"] == want
    args = templates(doc)["train"]["container"]["args"]
    assert templates(doc)["train"]["container"]["command"] == ["python", "-m", "components.train"]
    assert json.loads(args[args.index("--trainer-command") + 1]) == command
    _, spec, _ = compiled(cfg, tmp_path)
    train = container(spec, "train")
    assert train["image"] == "ghcr.io/team/boost:1.2"
    assert container(spec, "compare")["image"] == raw["image"]
    assert json.dumps(command) in train["args"]


def test_a_trainer_outside_the_repo_sweeps_from_pythonpath(
    raw: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "team_code"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "fit.py").write_text(
        textwrap.dedent(
            """
            from components.api import Trial

            def train(trial: Trial, *, lr: float, steps: int = 5) -> None:
                w = 1.0
                if trial.state is not None:
                    w = trial.state["w"]
                for step in range(trial.start_step + 1, steps + 1):
                    w -= lr * w
                    trial.log(step, {"loss": w})
                    trial.checkpoint(step, lambda: {"w": w})
                trial.result({"loss": w, "w_final": w})
            """
        )
    )
    pythonpath = f"{REPO}{os.pathsep}{tmp_path}"
    monkeypatch.setenv("PYTHONPATH", pythonpath)
    search = {
        **raw["search"],
        "objective": {"metric": "loss", "direction": "minimize"},
        "space": {"grid": {"lr": [0.1, 0.2]}, "fixed": {"steps": 7}},
    }
    cfg = parse_config({**raw, "trainer": {"function": "team_code.fit:train"}, "search": search})
    args = templates(build(cfg).to_dict())["train"]["container"]["args"]
    assert args[args.index("--trainer-function") + 1] == "team_code.fit:train"
    params = {"lr": 0.1, "steps": 7}
    env = {**os.environ, "SWEEPYARD_SHARED": str(tmp_path / "shared"), "PYTHONPATH": pythonpath}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        sys.executable, "-m", "components.train", "--trainer-function", "team_code.fit:train",
        "--sweep-id", "s1", "--trial-id", trial_id(params), "--params", json.dumps(params),
        "--data", str(tmp_path), "--objective", "loss",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tdir = tmp_path / "shared" / "sweeps" / "s1" / "trials" / trial_id(params)
    result = json.loads((tdir / "result.json").read_text())
    assert result["status"] == "done" and result["step"] == 7
    assert result["metrics"]["w_final"] == pytest.approx(0.9**7)
    bad = {"lr": 0.1, "steps": 2.5}
    cmd[cmd.index("--params") + 1], cmd[cmd.index("--trial-id") + 1] = (
        json.dumps(bad),
        trial_id(bad),
    )
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3 and "'steps' must be an integer" in proc.stderr


PROGRAM = """
import json, os, sys
lr, steps = float(sys.argv[1]), json.loads(os.environ["SWEEPYARD_PARAMS"])["steps"]
with open(os.environ["SWEEPYARD_METRICS"], "a") as f:
    for step in range(1, steps + 1):
        f.write(json.dumps({"step": step, "val_loss": 1.0 / (1 + lr * step)}) + "\\n")
with open(os.path.join(os.environ["SWEEPYARD_MODEL_DIR"], "model.json"), "w") as f:
    json.dump({"lr": lr}, f)
"""


@pytest.mark.slow
def test_a_command_sweep_runs_on_the_local_backend_and_registers_its_files(
    tmp_path: Path, mlflow_server: Any
) -> None:
    import mlflow

    from pipelines.backends.local import run_workflow
    from pipelines.validate import validate_or_raise

    doc = yaml.safe_load((REPO / "tests" / "configs" / "local_small.yaml").read_text())
    doc["trainer"] = {
        "command": ["python", "-c", PROGRAM, "{lr}"],
        "params": ["lr", "hidden", "steps", "batch_size", "seed"],
    }
    doc["tracking"]["model_name"] = "command-files"
    manifest = build(parse_config(doc)).to_dict()
    validate_or_raise(manifest, "command sweep")
    result = run_workflow(
        manifest,
        run_dir=tmp_path / "run",
        shared_root=tmp_path / "shared",
        env={"MLFLOW_TRACKING_URI": mlflow_server.url},
        cwd=REPO,
        progress=False,
    )
    assert result.status == "Succeeded", {n.name: n.message for n in result.nodes.values()}
    summary = json.loads(result.nodes["compare"].outputs["summary"])
    best = summary["best"]
    assert best["params"]["lr"] == 0.03
    mlflow.set_tracking_uri(mlflow_server.url)
    files = Path(mlflow.artifacts.download_artifacts(summary["model"]["uri"]))
    found = [p for p in files.rglob("model.json")]
    assert [json.loads(p.read_text()) for p in found] == [{"lr": 0.03}]


def test_a_command_takes_the_trials_places_and_collectors_checked_at_load(
    raw: dict[str, Any],
) -> None:
    places = ["prog", "--data", "{data}", "--out={workdir}/x", "{checkpoint_dir}", "{model_dir}",
              "{trial_id}", "{lr}"]  # fmt: skip
    cfg = parse_config({**raw, "trainer": {"command": places, "model": "out/model.pt"}})
    assert cfg.trainer.model == "out/model.pt"
    no_data = {k: v for k, v in raw.items() if k != "data"}
    assert "trainer.command[2]: placeholder {data} needs a data source" in problems(
        no_data, trainer={"command": places}
    )
    space = {**raw["search"]["space"], "grid": {**raw["search"]["space"]["grid"], "workdir": [1]}}
    reserved = problems(
        raw, trainer={"command": ["prog"]}, search={**raw["search"], "space": space}
    )
    assert (
        "search.space: param 'workdir' takes a name the command's placeholders reserve" in reserved
    )
    bad = {"command": ["prog"], "collect": {"stdout": {"val_loss": "valid loss ([0-9."}}}
    assert "trainer.collect.stdout.val_loss" in problems(raw, trainer=bad)
    bad = {"command": ["prog"], "collect": {"stdout": {"val_loss": r"valid loss [\d.]+"}}}
    assert "trainer.collect.stdout.val_loss" in problems(raw, trainer=bad)
    bad = {"command": ["prog"], "collect": {"tensorboard": "/var/log/tf", "logs": 1}}
    both = problems(raw, trainer=bad)
    assert "trainer.collect.tensorboard" in both and "trainer.collect.logs" in both
    twice = {"command": ["prog"], "collect": {"stdout": {"loss": "loss ([0-9.]+)"},
             "file": {"path": "m.log", "regex": {"loss": "loss: ([0-9.]+)"}}}}  # fmt: skip
    assert "trainer.collect.file.regex.loss: metric 'loss' is already collected" in problems(
        raw, trainer=twice
    )
    assert "trainer.model" in problems(raw, trainer={"command": ["prog"], "model": "/abs/m.pt"})
    assert "trainer.model" in problems(raw, trainer={"command": ["prog"], "model": "../m.pt"})
    function = {"function": "components.trainers.digits:train", "collect": {"stdout": "name=value"}}
    assert "'collect' is for a command" in problems(raw, trainer=function)


def test_a_metric_given_twice_in_the_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    from pipelines.config import load_config

    text = (REPO / "pipelines" / "plain-stdout.yaml").read_text()
    text = text.replace("    stdout: name=value", "    stdout:\n      loss: 'a ([0-9.]+)'\n"
                        "      loss: 'b ([0-9.]+)'")  # fmt: skip
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "key 'loss' is given twice" in str(info.value) and "line 19" in str(info.value)


def test_a_sweep_without_data_compiles_with_no_fetch_step(tmp_path: Path) -> None:
    from pipelines.config import load_config

    cfg = load_config("plain-tensorboard")
    assert cfg.data is None
    doc = build(cfg).to_dict()
    assert validate_document(doc) == []
    assert "fetch" not in templates(doc)
    main = next(t for t in doc["spec"]["templates"] if t["name"] == "main")
    train = next(t for t in main["dag"]["tasks"] if t["name"] == "train")
    assert train["depends"] == "plan"
    args = {a["name"]: a.get("value") for a in train["arguments"]["parameters"]}
    assert args["data-path"] == "" and args["data-hash"] == ""
    text, spec, _ = compiled(cfg, tmp_path)
    assert "components.fetch" not in text
    assert "fetch" not in str(list(spec.deployment_spec.fields["executors"].struct_value.fields))


def test_every_value_of_the_space_is_checked_against_the_declared_types(
    raw: dict[str, Any],
) -> None:
    """The reference trainer declares lr: float, hidden: int (its dataclass): a string in the grid,
    a float for an int, or a float range for an int are refused at load, naming key and value."""
    space = raw["search"]["space"]
    grid = {**space["grid"], "lr": ["fast", 0.003], "hidden": [32, 64.5]}
    bad = problems(raw, search={**raw["search"], "space": {**space, "grid": grid}})
    assert (
        "search.space.grid.lr[0]: param 'lr' is declared float: must be a number, got 'fast'" in bad
    )
    assert "search.space.grid.hidden[1]: param 'hidden' is declared int: must be an integer" in bad
    random = {"n_trials": 2, "params": {"hidden": {"uniform": [16, 64]}}}
    grid = {k: v for k, v in space["grid"].items() if k != "hidden"}
    ranged = problems(raw, search={**raw["search"], "algorithm": "random",
                                   "space": {**space, "grid": grid, "random": random}})  # fmt: skip
    assert "search.space.random.params.hidden.uniform: param 'hidden' is declared int" in ranged
    assert "a uniform range draws floats" in ranged
    random = {"n_trials": 2, "params": {"hidden": {"int": [16, 64], "step": 16}}}
    parse_config({**raw, "search": {**raw["search"], "algorithm": "random",
                                    "space": {**space, "grid": grid, "random": random}}})  # fmt: skip
    typed = {"command": ["prog", "{lr}", "{hidden}", "{batch_size}"],
             "params": {"lr": "float", "hidden": "str", "batch_size": "int", "steps": "int",
                        "seed": "int"}}  # fmt: skip
    assert "search.space.grid.hidden[0]: param 'hidden' is declared str" in problems(
        raw, trainer=typed
    )


def test_a_param_no_placeholder_uses_is_warned_about_at_compile(
    raw: dict[str, Any], tmp_path: Path
) -> None:
    from pipelines.trainer import trainer_warnings

    cfg = parse_config({**raw, "trainer": {"command": ["prog", "--lr", "{lr}"]}})
    warned = trainer_warnings(cfg.trainer, cfg.search.space)
    assert [p for p, _ in warned] == ["trainer.command"] * 4
    assert "param 'hidden' is used by no placeholder" in warned[1][1]
    declared = {"command": ["prog", "--lr", "{lr}"],
                "params": ["lr", "hidden", "batch_size", "steps", "seed"]}  # fmt: skip
    cfg = parse_config({**raw, "trainer": declared})
    assert trainer_warnings(cfg.trainer, cfg.search.space) == []
    path = tmp_path / "warned.yaml"
    path.write_text(yaml.safe_dump({**raw, "trainer": {"command": ["prog", "--lr", "{lr}"]}}))
    out = subprocess.run(
        [sys.executable, "-m", "pipelines", "compile", "--pipeline", str(path), "--out",
         str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "warning: sweep: trainer.command: param 'seed' is used by no placeholder" in out.stderr
