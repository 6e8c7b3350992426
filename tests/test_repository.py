"""Repository contracts: the README's commands are what CI runs; conda envs match the pins."""

import ast
import re
import subprocess
import sys
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


# Import names whose pip distribution is named differently.
DISTRIBUTIONS = {"PIL": "pillow", "yaml": "pyyaml", "sklearn": "scikit-learn"}
LIBRARY = REPO / "workflow_scripts" / "class_embedding"


def imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules a Python file imports (package-relative ones resolved)."""
    names = set()
    package = ["class_embedding", *path.parent.relative_to(LIBRARY).parts] if path.is_relative_to(LIBRARY) else []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.add(module)
            if module.startswith("class_embedding"):  # "from package import module"
                names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def third_party_imports(script: Path) -> set[str]:
    """Distributions a rule script needs, following imports through the class_embedding library."""
    needed, seen, todo = set(), set(), [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(path):
            top, *rest = name.split(".")
            if top == "class_embedding":
                # A module and the __init__ of every package above it run on import.
                packages = [LIBRARY.joinpath(*rest[:i], "__init__.py") for i in range(len(rest) + 1)]
                todo += [p for p in (LIBRARY.joinpath(*rest).with_suffix(".py"), *packages) if p.is_file()]
            elif top not in sys.stdlib_module_names:
                needed.add(DISTRIBUTIONS.get(top, top).lower())
    return needed


def test_each_rules_conda_env_has_what_its_script_imports():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for rule in re.split(r"^(?=\s*(?:rule|checkpoint)\b[^\n]*:$)", smk.read_text(), flags=re.M):
            env = re.search(r'conda:\s*\n\s*"\.\./envs/([\w.]+)"', rule)
            script = re.search(r'script:\s*\n\s*"\.\./(workflow_scripts/[\w./]+)"', rule)
            if not (env and script):
                continue
            spec = yaml.safe_load((REPO / "envs" / env.group(1)).read_text())
            pip_deps = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
            provided = set(pins(pip_deps))
            missing = third_party_imports(REPO / script.group(1)) - provided
            assert not missing, (
                f"{smk.name}: {script.group(1)} imports {sorted(missing)}, absent from envs/{env.group(1)}"
            )


def test_slurm_profile_polls_squeue_retries_and_routes_gpu_jobs():
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert profile["executor"] == "slurm" and profile["slurm-status-command"] == "squeue"
    assert profile["retries"] >= 1 and profile["latency-wait"] >= 30 and profile["rerun-incomplete"]
    assert all("attempt" in str(profile["default-resources"][key]) for key in ("mem_mb", "runtime"))
    # `--profile slurm` finds the link in the workflow directory; paths in the profile are relative to it.
    assert (REPO / "slurm").is_symlink() and (REPO / "slurm").resolve() == (REPO / "profiles/slurm").resolve()
    partitions = yaml.safe_load((REPO / "slurm" / profile["slurm-partition-config"]).read_text())["partitions"]
    assert {limits["max_gpu"] > 0 for limits in partitions.values()} == {True, False}
    local = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    assert local["resources"]["gpu"] == 1 and local["set-resource-scopes"]["gpu"] == "local"
    # Every GPU rule asks for memory and runtime that grow with the attempt, so retries get more:
    # a GPU is asked for only through gpu_job() of rules/common.smk, which scales both.
    common = (REPO / "rules/common.smk").read_text()
    gpu_job = re.search(r"^def gpu_job\(.*?(?=^def |^# )", common, re.M | re.S).group(0)
    assert re.search(r'"mem_mb": per_attempt\(mem_mb\), "runtime": per_attempt\(runtime\)', gpu_job)
    assert re.search(r"def per_attempt\(amount\):.*return amount \* attempt", common, re.S)
    gpu_rules = 0
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for rule in re.split(r"^(?=\s*(?:rule|checkpoint)\b[^\n]*:$)", smk.read_text(), flags=re.M):
            assert not re.search(r"\bgpu\s*=", rule), (smk.name, rule[:60])
            gpu_rules += len(re.findall(r"^\s+\*\*gpu_job\(", rule, re.M))
    assert gpu_rules >= 6
