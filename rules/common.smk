# Shared helpers: config validation, the model list, wildcard constraints, paths and targets.
# Nothing here imports torch: a dry run stays fast.
import os
import zlib

import jsonschema
import yaml

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


SCHEMA = os.path.join(workflow.basedir, "config", "schema.yaml")


def validate_config(config):
    """Check the config against the schema, naming the offending key; then fill in defaults."""
    with open(SCHEMA) as handle:
        schema = yaml.safe_load(handle)
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        raise WorkflowError(
            f"invalid config: {key}: {error.message}. Fix it; config/schema.yaml documents every key."
        )
    validate(config, SCHEMA, set_default=True)
    for name, spec in config["models"].items():
        if spec["dataset"] not in config["datasets"]:
            raise WorkflowError(
                f"invalid config: models.{name}.dataset '{spec['dataset']}' is not a key of datasets "
                f"({', '.join(config['datasets'])}): name one of them or add the dataset."
            )
    for name, dataset in config["datasets"].items():
        if "generate" in dataset:
            continue
        if "root" not in dataset:
            raise WorkflowError(f"invalid config: datasets.{name} needs a root (or a generate block).")
        if not os.path.isdir(dataset["root"]):
            raise WorkflowError(
                f"datasets.{name}.root: '{dataset['root']}' does not exist. Point it at the directory "
                f"holding ImageNetS919/ (see the README for how to obtain ImageNet-S)."
            )


validate_config(config)


def twin_seed(name):
    """Seed of a random twin: the config seed mixed with the model name, stable across runs."""
    return config["seed"] * 1_000_003 + zlib.crc32(name.encode()) % 1_000_003


def all_models():
    """Every model to extract: the configured ones and their random-initialisation twins."""
    models = {}
    for name, spec in config["models"].items():
        models[name] = {**spec, "name": name, "twin_of": None}
        if spec["random_twin"]:
            twin = f"{name}_random"
            models[twin] = {
                **spec,
                "name": twin,
                "display_name": f"{spec['display_name']} (random)",
                "weights": {"source": "random_init", "seed": twin_seed(name)},
                "twin_of": name,
            }
    return models


MODELS = all_models()
TRAINED_MODELS = list(config["models"])


def alternatives(names):
    return "|".join(sorted(names, key=len, reverse=True))


def is_generated(dataset):
    return "generate" in config["datasets"][dataset]


def dataset_root(dataset):
    """Where a dataset's ImageNet-S layout lives; generated datasets live under results/."""
    if is_generated(dataset):
        return f"results/data/{dataset}"
    return config["datasets"][dataset]["root"]


def dataset_files(dataset):
    """Inputs of jobs that read a dataset (the generator's outputs, or the user's files)."""
    root = dataset_root(dataset)
    return {
        "images": f"{root}/ImageNetS919",
        "categories": f"{root}/data/categories/ImageNetS_categories_im919.txt",
    }


def model_dataset(model):
    return MODELS[model]["dataset"]


def layer_names(model):
    blocks = range(MODELS[model]["num_blocks"])
    return [f"{kind}_{b}" for kind in ("hs", "attn", "mlp") for b in blocks]


def extract_dir(model):
    return f"results/extract/{model}"


def layer_tables(model, kinds=("hs", "attn", "mlp")):
    return [
        f"{extract_dir(model)}/{name}.parquet"
        for name in layer_names(model)
        if name.split("_")[0] in kinds
    ]


def checkpoint_path(model):
    return f"results/checkpoints/{model}.pt"


def describe_model(name):
    """What analysis scripts need to know about a configured model (passed as params)."""
    spec = MODELS[name]
    dataset = spec["dataset"]
    twin = f"{name}_random"
    return {
        "name": name,
        "display_name": spec["display_name"],
        "extract_dir": extract_dir(name),
        "num_blocks": spec["num_blocks"],
        "num_classes": spec["num_classes"],
        "class_token": spec["class_token"],
        "token_grid": spec["token_grid"],
        "block_group": spec["block_group"],
        "stimuli": f"results/data/{dataset}/stimuli.parquet",
        "token_labels": f"results/data/{dataset}/token_labels_g{spec['token_grid']}.parquet",
        "checkpoint": checkpoint_path(name),
        "random_twin": (
            {"name": twin, "extract_dir": extract_dir(twin)} if twin in MODELS else None
        ),
    }


def figure_models():
    return [describe_model(name) for name in TRAINED_MODELS]


def identifiability_inputs(kinds=("hs",), twins=True):
    """Layer tables (and predictions) of every configured model, with its twin when asked."""
    def inputs(wildcards):
        files = []
        for name in TRAINED_MODELS:
            for model in [name, f"{name}_random"] if twins else [name]:
                if model in MODELS:
                    files += layer_tables(model, kinds)
                    files.append(f"{extract_dir(model)}/predictions.parquet")
        return files

    return inputs


def final_outputs():
    """Every figure and table of the configured models (rule all)."""
    summaries = [
        *IDENTIFIABILITY_TARGETS,
        "tab_context_change_rate_diff",
        "tab_attn_perturbation",
        "tab_context_perturbation",
        *MEMORY_TARGETS,
    ]
    targets = [
        f"results/tables/{name}.csv" if name.startswith("tab_") else f"results/figures/{name}.pdf"
        for name in summaries
    ]
    targets += [
        f"results/figures/{figure}_{model}.pdf"
        for figure in ("fig_class_building", "fig_context_identifiability")
        for model in TRAINED_MODELS
    ]
    return targets


def models_with_source(source):
    return [name for name, spec in MODELS.items() if spec["weights"]["source"] == source]


def stimuli_table(model):
    return f"results/data/{model_dataset(model)}/stimuli.parquet"


def shard_dirs(model):
    """Shard outputs of a model. Without shard_size there is one, so the whole DAG is known up
    front; with it, their number is known once the stimulus table exists (a checkpoint)."""
    shard_size = config["extraction"]["shard_size"]
    n_shards = 1
    if shard_size:
        import pyarrow.parquet

        table = checkpoints.stimuli.get(dataset=model_dataset(model)).output[0]
        n_shards = -(-pyarrow.parquet.read_metadata(table).num_rows // shard_size)
    return [f"{extract_dir(model)}/shards/{shard}" for shard in range(n_shards)]


def figure_outputs(name, category="Identifiability"):
    """A figure's PDF (in the report), its PNG and the plotted numbers; a table's CSV."""
    caption = f"../report/{name}.rst"
    if name.startswith("tab_"):
        return {"csv": report(f"results/tables/{name}.csv", caption=caption, category=category)}
    return {
        "pdf": report(f"results/figures/{name}.pdf", caption=caption, category=category),
        "png": f"results/figures/{name}.png",
        "data": f"results/tables/{name}.csv",
    }


# target name -> whether it compares with the random twins
IDENTIFIABILITY_TARGETS = {
    "tab_identifiability_rates": False,
    "tab_identifiability_random": True,
    "fig_identifiability_hist": False,
    "fig_identifiability_evolution": True,
    "fig_identifiability_mean_evolution": False,
    "fig_change_rate": False,
}
