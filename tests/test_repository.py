"""Repository contracts: the README's commands are what CI runs; conda envs match the pins."""

import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def pins(lines):
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"'{line}' is not pinned with =="
            found[name.lower()] = version
    return found


def test_ci_runs_exactly_the_readme_commands():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- fresh-machine-commands -->\n```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line for line in block.splitlines() if line.strip()]
    assert commands == ["pip install -r requirements.txt && snakemake --cores 2", "python -m pytest"]
    # .ci/run extracts them itself; check what it would run.
    script = (REPO / ".ci/run").read_text()
    extraction = script.split("mapfile -t commands < <(")[1].split("\n)")[0]
    extracted = subprocess.run(["bash", "-c", extraction], cwd=REPO, capture_output=True, text=True, check=True)
    assert extracted.stdout.splitlines() == commands
    assert readme.index("fresh-machine-commands") < 1500, "the two commands open the README"


def test_conda_envs_pin_the_same_versions_as_requirements():
    required = pins((REPO / "requirements.txt").read_text().splitlines())
    for env_file in sorted((REPO / "envs").glob("*.yaml")):
        env = yaml.safe_load(env_file.read_text())
        assert env["channels"] == ["conda-forge", "nodefaults"], env_file.name
        conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
        assert all(re.fullmatch(r"[\w.-]+=[\d.*]+", d) for d in conda_deps), env_file.name
        pip_deps = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
        for name, version in pins(pip_deps).items():
            assert required.get(name) == version, f"{env_file.name}: {name}=={version} differs from requirements.txt"


def test_every_rule_has_a_log_and_a_conda_env():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        text = smk.read_text()
        starts = [m.start() for m in re.finditer(r"^\s*(?:rule|checkpoint)\b[^\n]*:$", text, re.M)]
        if smk.name != "common.smk":
            assert starts, smk.name
        for start, end in zip(starts, starts[1:] + [len(text)]):
            rule = text[start:end].strip()
            assert "log:" in rule and "conda:" in rule, f"{smk.name}: {rule.splitlines()[0]}"
            env = re.search(r'conda:\s*\n\s*"\.\./(envs/[\w.]+)"', rule).group(1)
            assert (REPO / env).is_file()
