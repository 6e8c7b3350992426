# Helpers of every file in rules/ (Snakemake's linter wants no rules here): the config checked
# (class_embedding.config_checks) and each stage's models (class_embedding.stage_models); path
# helpers (resources/ for what is fetched, results/ for what is computed); named input functions
# of the {model} and {dataset} wildcards; resource helpers; the target tables and the targets of
# the default target. Nothing here imports torch, so that a dry run stays fast.
import os
import shutil
import sys

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The library's torch-free parts describe models when the rules are parsed.
sys.path.insert(0, os.path.join(workflow.basedir, "workflow_scripts"))
from class_embedding import config_checks, job_status, network, stage_models
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
        config_checks.check_tables_complete("results")
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


# Datasets ---------------------------------------------------------------------------------------


def dataset_kind(dataset):
    return stage_models.dataset_kind(config, dataset)


def has_segmentation(dataset):
    return stage_models.has_segmentation(config, dataset)


def datasets_of_kind(*kinds):
    return [name for name in config["datasets"] if dataset_kind(name) in kinds]


def dataset_root(dataset):
    """Where a dataset's ImageNet-S layout lives; generated and prepared ones live under results/."""
    if dataset_kind(dataset) == "image_folder":
        return config["datasets"][dataset]["image_folder"]["root"]
    if dataset_kind(dataset) != "root":
        return f"results/data/{dataset}"
    return config["datasets"][dataset]["root"]


def imagenet_s_layout(root):
    """The files of an ImageNet-S layout that jobs read: the class folders of images and the category list."""
    return {"images": f"{root}/ImageNetS919", "categories": f"{root}/data/categories/ImageNetS_categories_im919.txt"}


def dataset_files(dataset):
    """Inputs of jobs that read a dataset (the generator's or a prepare rule's outputs, or the
    user's files). CIFAR-100 has images only (no categories file, no segmentations); an image
    folder has images and, when given, masks."""
    if dataset_kind(dataset) == "image_folder":
        folder = config["datasets"][dataset]["image_folder"]
        return {"images": folder["root"], **({"masks": folder["masks"]} if folder.get("masks") else {})}
    layout = imagenet_s_layout(dataset_root(dataset))
    if dataset_kind(dataset) == "cifar100":
        del layout["categories"]
    return layout


def prepared_dataset_outputs():
    """Outputs of the rules that write a dataset's ImageNet-S layout under results/data/<dataset>."""
    layout = imagenet_s_layout("results/data/{dataset}")
    return {**layout, "images": directory(layout["images"])}


def dataset_download_items(dataset):
    """Names of a dataset's downloads, fetched by rule download (the ImageNet-S files, or the
    CIFAR-100 archive when no root is given)."""
    spec = config["datasets"][dataset]
    if "imagenet_s" in spec:
        return list(spec["imagenet_s"]["downloads"])
    if "cifar100" in spec and spec["cifar100"].get("root") is None:
        return ["cifar100"]
    return []


def generator_spec(wildcards):
    return config["datasets"][wildcards.dataset]["generate"]


def dataset_kind_of(wildcards):
    return dataset_kind(wildcards.dataset)


def download_source(wildcards):
    """URL and checksum of one of a dataset's downloads (rule download)."""
    spec = config["datasets"][wildcards.dataset]
    if wildcards.item == "cifar100":
        return spec["cifar100"]["download"]
    return spec["imagenet_s"]["downloads"][wildcards.item]


def imagenet_s_spec(wildcards):
    return config["datasets"][wildcards.dataset]["imagenet_s"]


def imagenet_val_archive(wildcards):
    return imagenet_s_spec(wildcards)["imagenet_val"]


def cifar_source(wildcards):
    """The CIFAR-100 root you gave, or the downloaded archive."""
    root = config["datasets"][wildcards.dataset]["cifar100"].get("root")
    return root if root is not None else download_path(wildcards.dataset, "cifar100")


def cifar_download_checksum(wildcards):
    """The pinned checksum the downloaded CIFAR-100 archive is checked against again before its
    pickles are read (required by check_paper_inputs); None for a root you gave (your own files)."""
    spec = config["datasets"][wildcards.dataset]["cifar100"]
    return spec["download"].get("checksum") if spec.get("root") is None else None


def image_folder_spec(wildcards):
    return config["datasets"][wildcards.dataset].get("image_folder")


def dataset_num_classes(wildcards):
    """The fewest classes of the models evaluated on a dataset: every stimulus label must be one of them."""
    return min((spec["num_classes"] for spec in MODELS.values() if spec["dataset"] == wildcards.dataset), default=None)


def stimuli_csv(wildcards):
    """The authors' stimulus table when the config names one (ImageNet-S datasets)."""
    path = config["datasets"][wildcards.dataset].get("imagenet_s", {}).get("stimuli_csv")
    return {"csv": path} if path else {}


# Paths. Inputs fetched from elsewhere (dataset downloads, sample images, the weight cache) live
# under resources/, so that deleting results/ never throws away what took hours to download.
# Prepared datasets and converted checkpoints stay under results/: they are rebuilt from
# resources/ without the network.


def download_path(dataset, item):
    return f"resources/downloads/{dataset}/{item}"


def sample_path(name):
    return f"resources/samples/{name}"


def stimuli_table(model):
    return f"results/data/{model_dataset(model)}/stimuli.parquet"


def model_dataset(model):
    return MODELS[model]["dataset"]


def layer_names(model):
    blocks = range(MODELS[model]["num_blocks"])
    return [f"{kind}_{b}" for kind in ("hs", "attn", "mlp") for b in blocks]


def model_dir(stage, model):
    """A model's folder of one stage's outputs (extract, memories, perturbation, explain, probes)."""
    return f"results/{stage}/{model}"


def layer_tables(model, kinds=("hs", "attn", "mlp")):
    folder = model_dir("extract", model)
    return [f"{folder}/{name}.parquet" for name in layer_names(model) if name.split("_")[0] in kinds]


def predictions_table(model):
    return f"{model_dir('extract', model)}/predictions.parquet"


def checkpoint_path(model):
    return f"results/checkpoints/{model}.pt"


def release_checkpoint_path(model):
    """A release checkpoint downloaded by URL, kept in the weight cache."""
    return f"{config['weights_cache']}/release/{model}.pth"


def finetune_init_path(model):
    """The checkpoint fine-tuning starts from (pretrained backbone, new head)."""
    return f"results/checkpoints/finetune_init/{model}.pt"


def token_labels_table(model):
    """Per-token class/context labels of a model's token grid; None where the dataset has no segmentations."""
    dataset = model_dataset(model)
    if not has_segmentation(dataset):
        return None
    return f"results/data/{dataset}/token_labels_g{TokenLayout.of(MODELS[model]).grid_name}.parquet"


def probe_stimuli_table(dataset):
    return f"results/data/{dataset}/probe_stimuli.parquet"


def probe_ranks_table(model):
    return f"{model_dir('probes', model)}/ranks.parquet"


def weight_check_file(model):
    """The weight check an extraction waits for, when the model declares expected values."""
    return f"results/checks/weights_{model}.json" if model in EXPECTED_VALUES else []


# The model description ---------------------------------------------------------------------------


def twin_name(name):
    """The random model a trained model is compared with: its own twin, else its random_baseline's."""
    spec = config["models"][name]
    source = name if spec["random_twin"] else spec.get("random_baseline")
    return f"{source}_random" if source else None


def describe_model(name):
    """What analysis scripts need to know about a trained model and where its files are (params)."""
    spec = MODELS[name]
    twin = twin_name(name)
    return {
        "name": name,
        "display_name": spec["display_name"],
        "extract_dir": model_dir("extract", name),
        "num_blocks": spec["num_blocks"],
        "num_classes": spec["num_classes"],
        "class_token": spec["class_token"],
        "distillation_token": spec["distillation_token"],
        "register_tokens": spec["register_tokens"],
        "token_grid": spec["token_grid"],
        "block_group": spec["block_group"],
        "stimuli": stimuli_table(name),
        "token_labels": token_labels_table(name),
        "checkpoint": checkpoint_path(name),
        "random_twin": {"name": twin, "extract_dir": model_dir("extract", twin)} if twin in MODELS else None,
        "memories": model_dir("memories", name),
        "perturbation_dir": model_dir("perturbation", name),
        "curves": f"{model_dir('explain', name)}/perturbation_curves.parquet",
        "correct": f"{model_dir('explain', name)}/perturbation_correct.parquet",
    }


# Built once: rules pass these dicts as params.
MODEL_DESCRIPTIONS = {name: describe_model(name) for name in TRAINED_MODELS}


def descriptions(names):
    return [MODEL_DESCRIPTIONS[name] for name in names]


# Model lists: which models each stage runs on (class_embedding.stage_models). -------------------

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


# Named input functions: what a job of a {model} or {dataset} wildcard reads. ---------------------


def model_spec(wildcards):
    """A model's entry as the jobs that compute from it get it: without its display name, so that
    a new label reruns only figures, tables and pages."""
    return compute_spec(MODELS[wildcards.model])


def model_description(wildcards):
    return MODEL_DESCRIPTIONS[wildcards.model]


def model_checkpoint(wildcards):
    return checkpoint_path(wildcards.model)


def model_layer_tables(wildcards):
    return layer_tables(wildcards.model)


def model_hidden_state_tables(wildcards):
    return layer_tables(wildcards.model, kinds=("hs",))


def model_predictions(wildcards):
    return predictions_table(wildcards.model)


def model_token_labels(wildcards):
    return token_labels_table(wildcards.model)


def model_preprocessing(wildcards):
    return MODELS[wildcards.model]["preprocessing"]


def model_token_map_inputs(wildcards):
    """What drawing a model's tokens over its images reads besides the layer tables: the images,
    stimuli and predictions, and the token labels with the segmentation categories where masks exist."""
    model = wildcards.model
    files = dataset_files(model_dataset(model))
    inputs = {"images": files["images"], "stimuli": stimuli_table(model), "predictions": predictions_table(model)}
    if token_labels_table(model) is not None:
        # ImageNet-S masks come with a categories file, an image folder's masks are files of their own.
        inputs.update(
            token_labels=token_labels_table(model), **{k: files[k] for k in ("categories", "masks") if k in files}
        )
    return inputs


def model_dataset_files(wildcards):
    return dataset_files(model_dataset(wildcards.model))


def model_weights(wildcards):
    return MODELS[wildcards.model]["weights"]


def demo_training_settings(wildcards):
    """The demo_training config, overridden by the model's own weights settings."""
    weights = model_weights(wildcards)
    return {**config["demo_training"], **{k: v for k, v in weights.items() if k != "source"}}


def checkpoint_source(wildcards):
    """The downloaded release checkpoint, or the file you gave."""
    weights = model_weights(wildcards)
    return release_checkpoint_path(wildcards.model) if weights["source"] == "url" else weights["path"]


def finetune_pickles(wildcards):
    return f"{dataset_root(model_dataset(wildcards.model))}/cifar-100-python"


def shard_dirs(model):
    """Shard outputs of a model. Without shard_size there is one, so the whole DAG is known up
    front; with it, their number is known once the stimulus table exists (a checkpoint)."""
    shard_size = config["extraction"]["shard_size"]
    n_shards = 1
    if shard_size:
        import pyarrow.parquet

        table = checkpoints.stimuli.get(dataset=model_dataset(model)).output[0]
        n_shards = -(-pyarrow.parquet.read_metadata(table).num_rows // shard_size)
    return [f"{model_dir('extract', model)}/shards/{shard}" for shard in range(n_shards)]


def shard_inputs(model):
    """Input function of a model's merge rule: its shard outputs."""

    def inputs(wildcards):
        return shard_dirs(model)

    return inputs


def model_weight_check(wildcards):
    return weight_check_file(wildcards.model)


def model_probe_ranks(wildcards):
    """The linear-probe token ordering, for models with probes."""
    return probe_ranks_table(wildcards.model) if wildcards.model in PROBE_MODELS else []


def model_probe_stimuli(wildcards):
    return probe_stimuli_table(model_dataset(wildcards.model))


def dataset_inputs(wildcards):
    return dataset_files(wildcards.dataset)


def stimulus_run_inputs(model):
    """What a job running a model on its stimuli reads: the dataset, the stimulus table, the checkpoint."""
    return {
        **dataset_files(model_dataset(model)),
        "stimuli": stimuli_table(model),
        "checkpoint": checkpoint_path(model),
    }


def model_stimulus_run_inputs(wildcards):
    return stimulus_run_inputs(wildcards.model)


def stimulus_run_params(*sections):
    """Params of a job running a model on its stimuli: the model's spec and the extraction
    settings, and those of the config sections named, each without its run settings (batch
    size, device, workers: the job reads them from the config, class_embedding.run_settings)."""
    return {"spec": model_spec, **{section: result_settings(config, section) for section in ("extraction", *sections)}}


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


# Figures and tables ------------------------------------------------------------------------------

# Plotting and table jobs take seconds: on a cluster they are submitted in batches (group
# "figures", batch size group-components in profiles/slurm) instead of one job each.
FIGURE_GROUP = "figures"


def figure_outputs(name, category="Identifiability", per_model=False):
    """A figure's PDF (in the report), its PNG and the plotted numbers; a table's CSV. With
    per_model, one of each per {model}, shown under the model in the report."""
    caption = f"../report/{name}.rst"
    if per_model:
        stem = f"{name}_{{model}}"
        subcategory = {"subcategory": "{model}"}
    else:
        stem, subcategory = name, {}
    if name.startswith("tab_"):
        return {"csv": report(f"results/tables/{stem}.csv", caption=caption, category=category, **subcategory)}
    return {
        "pdf": report(f"results/figures/{stem}.pdf", caption=caption, category=category, **subcategory),
        "png": f"results/figures/{stem}.png",
        "data": f"results/tables/{stem}.csv",
    }


def identifiability_inputs(twins):
    """Hidden-state tables and predictions of every configured model, with its twin when asked."""
    files = []
    for name in TRAINED_MODELS:
        for model in [name, twin_name(name)] if twins else [name]:
            if model in MODELS:
                files += layer_tables(model, ("hs",))
                files.append(predictions_table(model))
    return files


def memory_inputs(needs, names):
    """What a target reads for the given models: the weight-derived cache (per class or per
    memory), the activated memories of every attn/mlp sublayer with the predictions, the
    stimulus categories."""
    paths = {
        "classes": [f"{model_dir('memories', name)}/class_memories.parquet" for name in names],
        "memories": [f"{model_dir('memories', name)}/memory_classes.parquet" for name in names],
        "extraction": [
            path for name in names for path in layer_tables(name, ("attn", "mlp")) + [predictions_table(name)]
        ],
        "stimuli": sorted({stimuli_table(name) for name in names}),
    }
    return [path for need in needs for path in paths[need]]


# target name -> whether it compares with the random twins
IDENTIFIABILITY_TARGETS = {
    "tab_identifiability_rates": False,
    "tab_identifiability_random": True,
    "fig_identifiability_hist": False,
    "fig_identifiability_evolution": True,
    "fig_identifiability_mean_evolution": False,
    "fig_change_rate": False,
}

# target name -> (inputs, models, options passed to its function)
MEMORY_TARGETS = {
    "fig_class_value_agreement": (["classes"], TRAINED_MODELS, {}),
    "fig_key_value_agreement_rate": (["classes", "memories", "extraction"], TRAINED_MODELS, {}),
    "fig_agreement_accuracy_diff": (["classes", "memories", "extraction"], TRAINED_MODELS, {}),
    "fig_memory_compositionality": (["memories", "extraction"], TRAINED_MODELS, {}),
    "fig_memory_compare": (["classes", "memories", "extraction"], TRAINED_MODELS, {}),
    "tab_value_vector_classes": (
        ["memories", "stimuli"],
        VALUE_VECTOR_MODELS,
        config["memories"]["value_vectors"],  # block_index, layer_type, neurons
    ),
}

# Figures and tables over several models, besides the identifiability and memory targets.
# perturbation rule -> its output stem under results/perturbation/<model>/, its variants (by the
# wildcard naming them), and whether it reads the token labels
PERTURBATION_EXPERIMENTS = {
    "attn_perturbation": {"stem": "attn_{type}", "variants": {"type": ("self_only", "no_cls")}, "token_labels": False},
    "token_perturbation": {
        "stem": "tokens_no_{mask}",
        "variants": {"mask": ("context", "class_label")},
        "token_labels": True,
    },
}


def perturbation_outputs(rule):
    """Per (model, variant): the rank of the correct class for every token of the last block, and
    the predictions."""
    stem = f"{model_dir('perturbation', '{model}')}/{PERTURBATION_EXPERIMENTS[rule]['stem']}"
    return {"ranks": f"{stem}.parquet", "predictions": f"{stem}_predictions.parquet"}


# table -> the perturbation rule whose outputs it compares with the extraction
PERTURBATION_TABLES = {"tab_attn_perturbation": "attn_perturbation", "tab_context_perturbation": "token_perturbation"}
EXPLAIN_HEATMAP_FIGURES = ("fig_explain_head", "fig_explain_combined")
EXPLAIN_CURVE_TARGETS = ("fig_perturbation_neg", "fig_perturbation_pos", "tab_explain_perturbation_auc")
# tutorial figure -> its part of the tutorial config
TUTORIAL_FIGURES = {"fig_tutorial_cls_logits": "cls_logits", "fig_tutorial_heatmap": "heatmap"}


def target_file(name):
    return f"results/tables/{name}.csv" if name.startswith("tab_") else f"results/figures/{name}.pdf"


def per_model_targets(names, models):
    return [f"results/figures/{name}_{model}.pdf" for name in names for model in models]


def final_outputs():
    """Every figure and table of the configured models (rule all)."""
    summaries = [*IDENTIFIABILITY_TARGETS, "tab_context_change_rate_diff", *PERTURBATION_TABLES, *MEMORY_TARGETS]
    # The paper's numbers beside ours (rules/paper.smk), when the config gives them.
    if config.get("paper_reference"):
        summaries.append("tab_reproduction_vs_paper")
    if EXPLAIN_MODELS:
        summaries += EXPLAIN_HEATMAP_FIGURES
    if EXPLAIN_PERTURBATION_MODELS:
        summaries += EXPLAIN_CURVE_TARGETS
    if TUTORIAL_MODEL is not None:
        summaries += TUTORIAL_FIGURES
    targets = [target_file(name) for name in summaries]
    targets += per_model_targets(["fig_class_building"], TRAINED_MODELS)
    targets += per_model_targets(["fig_context_identifiability"], SEGMENTED_MODELS)
    targets += per_model_targets(["fig_probe_vs_projection_acc"], PROBE_MODELS)
    targets += per_model_targets(["fig_probe_perturbation", "fig_linear_probing_all"], PROBE_PERTURBATION_MODELS)
    targets += per_model_targets(["fig_explain_sum"], EXPLAIN_MODELS)
    targets += [f"{model_dir('explain', model)}/maps.parquet" for model in EXPLAIN_MODELS]
    targets += per_model_targets(["fig_token_maps"], TRAINED_MODELS)
    if EXPLORER_MODELS:
        targets.append("results/explorer/index.html")
    return targets


def skipped_targets():
    """What `all` leaves out for models whose dataset lacks masks (class/context labels) or the
    ImageNet-S test split the probes train on: one line per model and reason."""
    lines = []
    for name in TRAINED_MODELS:
        dataset = model_dataset(name)
        if not has_segmentation(dataset):
            lines.append(
                f"{name}: fig_context_identifiability_{name} and its rows of tab_context_change_rate_diff, "
                f"tab_attn_perturbation, tab_context_perturbation (datasets.{dataset} has no masks)"
            )
        if (
            config["probing"]["models"] is None
            and MODELS[name]["class_token"]
            and not stage_models.has_probe_split(config, dataset)
        ):
            lines.append(
                f"{name}: fig_probe_vs_projection_acc_{name}, fig_probe_perturbation_{name}, "
                f"fig_linear_probing_all_{name} (datasets.{dataset} has no test split for the linear probes)"
            )
    return lines


def report_skipped_targets():
    lines = skipped_targets()
    if lines:
        print("Skipped targets:\n  " + "\n  ".join(lines), file=sys.stderr)


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


# Sample images, the weight check and the tutorial figures (rules/checks.smk, rules/tutorial.smk).
# Checked at parse time, so a wrong layer, token or name stops even a dry run.
SAMPLE_IMAGES = config["sample_images"]
DOWNLOADED_SAMPLES = [name for name, spec in SAMPLE_IMAGES.items() if "url" in spec]
EXPECTED_VALUES = config["expected_values"]
TUTORIAL_MODEL = config["tutorial"]["model"]


def sample_image_inputs(name):
    """Input files of a sample image: the downloaded or given file, or a stimulus's dataset and table."""
    spec = SAMPLE_IMAGES[name]
    if "stimulus" in spec:
        dataset = spec["stimulus"]["dataset"]
        return {"images": dataset_files(dataset)["images"], "stimuli": f"results/data/{dataset}/stimuli.parquet"}
    return {"sample": sample_path(name) if "url" in spec else spec["path"]}


def sample_source(wildcards):
    return SAMPLE_IMAGES[wildcards.sample]


def expected_values(wildcards):
    return EXPECTED_VALUES[wildcards.model]


def weight_check_sample(wildcards):
    """The sample image a model's weight check runs on."""
    return SAMPLE_IMAGES[expected_values(wildcards)["image"]]


def weight_check_sample_inputs(wildcards):
    return sample_image_inputs(expected_values(wildcards)["image"])


def preflight_inputs():
    """Every download, every checkpoint (the start of fine-tuning for models fine-tuned here,
    FINETUNED_MODELS), the weight checks and the check of your paths; nothing that reads the
    ImageNet images."""
    files = [sample_path(name) for name in DOWNLOADED_SAMPLES]
    for dataset in config["datasets"]:
        files += [download_path(dataset, item) for item in dataset_download_items(dataset)]
    for model in MODELS:
        files.append(finetune_init_path(model) if model in FINETUNED_MODELS else checkpoint_path(model))
    files += [weight_check_file(model) for model in EXPECTED_VALUES]
    files.append("results/checks/user_inputs.json")
    return files
