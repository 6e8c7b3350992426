# Helpers of every file in rules/ (Snakemake's linter wants no rules here): the config checked
# (class_embedding.config.checks) and each stage's models (class_embedding.config.stage_models); path
# helpers (resources/ for what is fetched, results/ for what is computed); named input functions
# of the {model} and {dataset} wildcards; resource helpers; the target tables and the targets of
# the default target. Nothing here imports torch, so that a dry run stays fast.
import functools
import os
import shutil
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The library's torch-free parts describe models when the rules are parsed.
sys.path.insert(0, os.path.join(workflow.basedir, "workflow_scripts"))
from class_embedding import job_status, network
from class_embedding import results_layout as layout
from class_embedding.config import checks as config_checks
from class_embedding.config import stage_models
from class_embedding.errors import InputError
from class_embedding.extraction.model_checks import check_models
from class_embedding.models.tokens import TokenLayout
from class_embedding.run_settings import canonical, compute_spec, result_settings

SCHEMA = os.path.join(workflow.basedir, "config", "schema.yaml")


def model_checks_cache():
    """Where the verdicts of the model check are kept: in the working directory's .snakemake/,
    unless CLASS_EMBEDDING_MODEL_CHECKS names a file (the tests share one across their workdirs)."""
    default = os.path.join(".snakemake", "class_embedding", "model_checks.json")
    return os.environ.get("CLASS_EMBEDDING_MODEL_CHECKS") or default


def check_config(config):
    """Every check of the config, in place: the schema's defaults filled in and every mapping's
    keys sorted, so that each param built from it is the same whatever order the YAML file
    wrote them in (the order of models in figures is model_order's). Returns each stage's models."""
    config_checks.check_config_files(workflow.configfiles)
    # Once, by the Snakemake you started: a job on a cluster node parses the workflow again while
    # other jobs write their tables.
    if workflow.is_main_process:
        config_checks.check_tables_complete(layout.RESULTS)
    config_checks.check_free_text(config)
    error = config_checks.schema_error(config, SCHEMA)
    if error is not None:
        raise InputError(error)
    validate(config, SCHEMA, set_default=True)
    for message in config_checks.check_datasets(config):
        print(message, file=sys.stderr)
    ordered = canonical(config)
    config.clear()
    config.update(ordered)
    config_checks.check_weights(config)
    try:
        check_models(config["models"], model_checks_cache())
    except InputError as err:
        raise InputError(f"invalid config: {err}") from None
    stages = stage_models.StageModels.of(config)
    config_checks.check_token_map_blocks(config, stages.models, stages.trained)
    config_checks.check_sample_images(config)
    config_checks.check_expected_values(config, stages.models)
    config_checks.check_tutorial(config, stages.models, stages.trained)
    return stages


try:
    STAGES = check_config(config)
except InputError as err:
    raise WorkflowError(str(err)) from None
MODELS = STAGES.models
TRAINED_MODELS = STAGES.trained


def alternatives(names):
    """A wildcard constraint matching exactly these names; none at all when the list is empty
    (an empty constraint would match anything)."""
    names = sorted(names, key=len, reverse=True)
    return "|".join(names) if names else "(?!)"


include: "common/paths.smk"


# Model lists: which models each stage runs on (class_embedding.config.stage_models). -------------------

SEGMENTED_MODELS = STAGES.segmented
FINETUNED_MODELS = STAGES.finetuned
USER_CHECKPOINT_MODELS = STAGES.user_checkpoints
# Datasets of models fine-tuned here: a CIFAR-100 root you give must then hold the training split too.
FINETUNED_DATASETS = sorted({model_dataset(m) for m in FINETUNED_MODELS})
PERTURBATION_MODELS = STAGES.perturbation
EXPLAIN_MODELS = STAGES.explain
EXPLAIN_PERTURBATION_MODELS = STAGES.explain_perturbation
EXPLAIN_FIGURE_MODEL = STAGES.explain_figure
PROBE_MODELS = STAGES.probe
PROBE_PERTURBATION_MODELS = STAGES.probe_perturbation
VALUE_VECTOR_MODELS = STAGES.value_vectors
EXPLORER_MODELS = STAGES.explorer


def models_with_source(source):
    return [name for name, spec in MODELS.items() if spec["weights"]["source"] == source]


include: "common/inputs.smk"


# Resources ---------------------------------------------------------------------------------------


def per_attempt(amount):
    """Memory or runtime that grows with each retry, so a job killed for running out gets more."""

    def resource(wildcards, attempt):
        return amount * attempt

    return resource


def gpu_job(mem_mb, runtime):
    """Resources of a GPU job: one GPU, memory and runtime growing with the attempt. Such jobs
    declare threads: 4, CPU threads of torch (or data loading on a GPU), capped by --cores."""
    return {"gpu": 1, "mem_mb": per_attempt(mem_mb), "runtime": per_attempt(runtime)}


include: "common/targets.smk"


# The SLURM executor shells out to SLURM's client commands; without them each job would fail on
# its own with a bare "No such file or directory". Checked once before anything is submitted
# (hooks do not run in a dry run, which needs no SLURM).
SLURM_COMMANDS = ("sbatch", "squeue", "scancel", "sinfo")


def check_slurm_commands():
    plugin = workflow.executor_plugin
    if plugin is None or plugin.name != "slurm":
        return
    missing = [command for command in SLURM_COMMANDS if shutil.which(command) is None]
    if missing:
        raise WorkflowError(
            f"the SLURM executor needs SLURM's client commands, but {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not on PATH. Run snakemake on a login node "
            "of the cluster (sites with environment modules may need `module load slurm`), or "
            "install SLURM's client tools set up for your cluster (Debian/Ubuntu: apt install "
            "slurm-client)."
        )


onstart:
    check_slurm_commands()
    report_skipped_targets()
    network.forget()  # hosts found unreachable by an earlier run are checked again


# The table of every check at the end of `snakemake preflight`, also when checks failed (-k).
onsuccess:
    job_status.report_preflight(workflow, preflight_inputs())


onerror:
    job_status.report_preflight(workflow, preflight_inputs())
