# Helpers of every file in rules/ (Snakemake's linter wants no rules here): config validation;
# the models and their description; path helpers (resources/ for what is fetched, results/ for
# what is computed); the model list of each stage; named input functions of the {model} and
# {dataset} wildcards; resource helpers; the target tables and the targets of the default
# target. Nothing here imports torch, so that a dry run stays fast.
import os
import shutil
import sys
import zlib

import jsonschema
import yaml

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

# The library's torch-free parts describe models when the rules are parsed.
sys.path.insert(0, os.path.join(workflow.basedir, "workflow_scripts"))
from class_embedding import job_status, network
from class_embedding.config_files import check_no_duplicate_keys
from class_embedding.data.image_folder import scan_image_folder
from class_embedding.errors import InputError
from class_embedding.extraction.model_checks import check_models
from class_embedding.models.tokens import TokenLayout
from class_embedding.run_settings import canonical, compute_spec, result_settings
from class_embedding.table_check import unreadable_tables

SCHEMA = os.path.join(workflow.basedir, "config", "schema.yaml")


def validate_config(config):
    """Check the config against the schema, naming the offending key; then fill in defaults."""
    with open(SCHEMA) as handle:
        schema = yaml.safe_load(handle)
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is not None:
        key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        raise WorkflowError(f"invalid config: {key}: {error.message}. Fix it; config/schema.yaml documents every key.")
    validate(config, SCHEMA, set_default=True)
    for name, spec in config["models"].items():
        if spec["dataset"] not in config["datasets"]:
            raise WorkflowError(
                f"invalid config: models.{name}.dataset '{spec['dataset']}' is not a key of datasets "
                f"({', '.join(config['datasets'])}): name one of them or add the dataset."
            )
    for name, dataset in config["datasets"].items():
        kinds = [kind for kind in DATASET_KINDS if kind in dataset]
        if len(kinds) != 1:
            raise WorkflowError(
                f"invalid config: datasets.{name} needs exactly one of {', '.join(DATASET_KINDS)} "
                f"(it has {', '.join(kinds) or 'none'})."
            )
        if kinds[0] in ("imagenet_s", "cifar100"):
            check_paper_inputs(name, dataset)
            continue
        if "generate" in dataset:
            continue
        if "image_folder" in dataset:
            check_image_folder(name, dataset["image_folder"])
            continue
        if not os.path.isdir(dataset["root"]):
            raise WorkflowError(
                f"datasets.{name}.root: '{dataset['root']}' does not exist. Point it at the directory "
                f"holding ImageNetS919/ (docs/paper.md says how to obtain ImageNet-S)."
            )


# How a dataset is obtained: an existing ImageNet-S layout, the demo generator, prepared by
# rules/data.smk from downloads and your files (ImageNet-S919, CIFAR-100), or your own labelled
# image folder.
DATASET_KINDS = ("root", "generate", "imagenet_s", "cifar100", "image_folder")


def check_image_folder(name, folder):
    for key in ("root", "masks"):
        path = folder.get(key)
        if path is not None and not os.path.isdir(path):
            raise WorkflowError(
                f"datasets.{name}.image_folder.{key}: '{path}' does not exist. Point it at a directory of "
                f"class folders (<{key}>/<label>/{'<stem>.png' if key == 'masks' else '*.jpg'})."
            )
    if folder["labels"] == "wnid" and folder.get("class_names") is not None:
        raise WorkflowError(
            f"invalid config: datasets.{name}.image_folder: labels: wnid takes the wnids from timm's ImageNet "
            "info; drop class_names or use labels: class_name or index."
        )
    scan_image_folder_classes(name, folder)


def scan_image_folder_classes(name, folder):
    """The class folders of an image folder, listed (no image is opened): what is left out is said
    on the console, and too few classes, clashing or unreadable names stop the dry run."""
    num_classes = min(
        (spec["num_classes"] for spec in config["models"].values() if spec["dataset"] == name), default=None
    )
    try:
        scan = scan_image_folder(
            folder["root"],
            folder["labels"],
            config["stimuli"]["images_per_class"],
            num_classes=num_classes,
            class_names=folder["class_names"],
            imagenet_subset=folder["imagenet_subset"],
            min_class_share=config["stimuli"]["min_class_share"],
        )
    except InputError as err:
        raise WorkflowError(f"datasets.{name}.image_folder: {err}") from None
    for message in scan.messages:
        print(f"datasets.{name}.image_folder: {message}", file=sys.stderr)


def check_paper_inputs(name, dataset):
    """User-given paths of the paper run exist (a dry run with a wrong path stops here)."""
    paths = []
    if "imagenet_s" in dataset:
        spec = dataset["imagenet_s"]
        paths = [("imagenet_s.imagenet_val", spec["imagenet_val"])]
        paths += [(f"imagenet_s.{key}", spec.get(key)) for key in ("stimuli_csv", "synset_mapping")]
    else:
        spec = dataset["cifar100"]
        paths = [("cifar100.root", spec.get("root"))]
        if spec.get("root") is None and "download" not in spec:
            raise WorkflowError(f"invalid config: datasets.{name}.cifar100 needs a root or a download block.")
        if spec.get("root") is None and not spec["download"].get("checksum"):
            # The archive holds pickles, which run code when read: a download is only ever read
            # after a pinned checksum matched, never trusted on first sight.
            raise WorkflowError(
                f"invalid config: datasets.{name}.cifar100.download.checksum is null, but the CIFAR-100 "
                f"archive is a pickle and is read only after its pinned checksum matched. Set it (the "
                f"official archive's is md5:eb9058c3a382ffc7106e4002c42a8d85), or give a root you trust."
            )
    for key, path in paths:
        if path is not None and not os.path.exists(path):
            raise WorkflowError(
                f"datasets.{name}.{key}: '{path}' does not exist. Fix the path in the config "
                f"(docs/paper.md says where to get the data)."
            )


def check_weights(config):
    """Pretrained tags are explicit and match the architecture; user checkpoints exist."""
    for name, spec in config["models"].items():
        weights = spec["weights"]
        if weights["source"] == "timm" and weights["tag"].split(".")[0] != spec["arch"]:
            raise WorkflowError(
                f"invalid config: models.{name}.weights.tag '{weights['tag']}' is not a tag of arch '{spec['arch']}'."
            )
        if weights["source"] == "file":
            path = weights["path"]
            if path is None and not weights.get("finetune", {}).get("init_tag"):
                raise WorkflowError(
                    f"invalid config: models.{name}.weights: path is null, so finetune.init_tag must name the "
                    f"timm weights that fine-tuning starts from."
                )
            if path is not None and not os.path.isfile(path):
                raise WorkflowError(
                    f"models.{name}.weights.path: checkpoint '{path}' does not exist. Fix the path, or set it "
                    f"to null to fine-tune the model instead (docs/paper.md)."
                )
        baseline = spec.get("random_baseline")
        if baseline is not None and not config["models"].get(baseline, {}).get("random_twin", True):
            raise WorkflowError(
                f"invalid config: models.{name}.random_baseline '{baseline}' must be a model with random_twin: true."
            )


def model_checks_cache():
    """Where the verdicts of the model check are kept: in the working directory's .snakemake/,
    unless CLASS_EMBEDDING_MODEL_CHECKS names a file (the tests share one across their workdirs)."""
    default = os.path.join(".snakemake", "class_embedding", "model_checks.json")
    return os.environ.get("CLASS_EMBEDDING_MODEL_CHECKS") or default


def check_models_analysable(config):
    """Every configured architecture is one the lens analyses exactly (a short copy is built and
    audited; verdicts are cached, so only a new or changed model costs a torch import)."""
    try:
        check_models(config["models"], model_checks_cache())
    except InputError as err:
        raise WorkflowError(f"invalid config: {err}") from None


def canonicalise_config(config):
    """Sort the keys of every mapping of the config, in place: every param built from it is then
    the same whatever order the YAML file wrote them in (the order of models in figures is
    model_order's)."""
    ordered = canonical(config)
    config.clear()
    config.update(ordered)


def check_free_text(value, key="(top level)"):
    """No `<` in any text of the config. Display names and other config text reach the params of
    figure jobs, and `snakemake --report` writes those params inside a <script> element
    unescaped: `</script>` or `<!--` there would run or hide script in the report."""
    if isinstance(value, dict):
        for name, item in value.items():
            check_free_text(name, key)
            check_free_text(item, f"{key}.{name}" if key != "(top level)" else str(name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_free_text(item, f"{key}[{index}]")
    elif isinstance(value, str) and "<" in value:
        raise WorkflowError(
            f"invalid config: {key}: {value!r} contains '<', which the config does not accept: the report "
            "embeds config text in a script element, where '</script>' or '<!--' would break out of it. "
            "Write it without '<' (a display name such as 'ViT < 1M' as 'ViT under 1M')."
        )


def ordered_model_names(config):
    """The trained models in figure order: model_order, then the others by name."""
    names = sorted(config["models"])
    order = config["model_order"] or []
    unknown = [name for name in order if name not in config["models"]]
    if unknown:
        raise WorkflowError(
            f"invalid config: model_order: {', '.join(unknown)} {'is not a key' if len(unknown) == 1 else 'are not keys'} "
            f"of models ({', '.join(names)})."
        )
    return list(order) + [name for name in names if name not in order]


def check_config_files():
    """A key given twice in a config file is an error, not a silent override (YAML loaders keep
    the last one)."""
    for path in workflow.configfiles:
        try:
            check_no_duplicate_keys(path)
        except InputError as err:
            raise WorkflowError(f"invalid config: {err}") from None


def check_tables_complete():
    """A Parquet table cut short (a killed copy, a full disk) is not rebuilt by Snakemake, which
    only looks at its time stamp; its readers would fail after deleting their old outputs."""
    broken = unreadable_tables("results")
    if broken:
        raise WorkflowError(
            f"{len(broken)} Parquet table(s) under results/ are incomplete (cut short by a killed job, a full "
            f"disk or a partial copy): {', '.join(broken)}. Delete them and rebuild them as targets "
            f"(rm {' '.join(broken)} && snakemake --cores <n> {' '.join(broken)}, with your --configfile), then "
            "run as before: what depends on them is rebuilt because they are newer."
        )


check_config_files()
# Once, by the Snakemake you started: a job on a cluster node parses the workflow again while
# other jobs write their tables.
if workflow.is_main_process:
    check_tables_complete()
check_free_text(config)
validate_config(config)
canonicalise_config(config)
check_weights(config)
check_models_analysable(config)


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
TRAINED_MODELS = ordered_model_names(config)
for reference_model in config.get("paper_reference", {}):
    if reference_model not in MODELS:
        raise WorkflowError(
            f"invalid config: paper_reference.{reference_model} is not a model or random twin of this config."
        )


def alternatives(names):
    """A wildcard constraint matching exactly these names; none at all when the list is empty
    (an empty constraint would match anything)."""
    names = sorted(names, key=len, reverse=True)
    return "|".join(names) if names else "(?!)"


# Datasets ---------------------------------------------------------------------------------------


def dataset_kind(dataset):
    return next(kind for kind in DATASET_KINDS if kind in config["datasets"][dataset])


def has_segmentation(dataset):
    """Whether a dataset has segmentations, hence per-token class/context labels (not CIFAR, nor
    an image folder without masks)."""
    kind = dataset_kind(dataset)
    if kind == "image_folder":
        return config["datasets"][dataset]["image_folder"].get("masks") is not None
    return kind != "cifar100"


def has_probe_split(dataset):
    """Whether a dataset has ImageNet-S's test split, on which the linear probes are trained."""
    return dataset_kind(dataset) not in ("cifar100", "image_folder")


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


# Model lists: which models each stage runs on. ---------------------------------------------------


def configured_subset(key, names, allowed, what):
    """A config list of model names, each checked against the allowed ones."""
    for name in names:
        if name not in allowed:
            raise WorkflowError(f"invalid config: {key}: '{name}' is not {what} ({', '.join(allowed) or 'none'}).")
    return list(names)


def models_with_source(source):
    return [name for name, spec in MODELS.items() if spec["weights"]["source"] == source]


def explain_models():
    """Trained [CLS] models with gradient maps: explainability.models, by default all of them."""
    cls_models = [name for name in TRAINED_MODELS if MODELS[name]["class_token"]]
    names = config["explainability"]["models"]
    if names is None:
        return cls_models
    return configured_subset("explainability.models", names, cls_models, "a trained model with a class token")


def explain_figure_model():
    """Model of fig_explain_head and fig_explain_combined: explainability.figures.model or the first explained one."""
    name = config["explainability"]["figures"]["model"]
    if name is None:
        return EXPLAIN_MODELS[0]
    return configured_subset("explainability.figures.model", [name], EXPLAIN_MODELS, "an explained model")[0]


def explain_perturbation_models():
    """Explained models that get the perturbation test: explainability.perturbation_models."""
    names = config["explainability"]["perturbation_models"]
    if names is None:
        return EXPLAIN_MODELS
    return configured_subset(
        "explainability.perturbation_models", names, EXPLAIN_MODELS, "an explained model (explainability.models)"
    )


def probe_models():
    """Trained models with linear probes: probing.models, by default every [CLS] model."""
    names = config["probing"]["models"]
    if names is None:
        # CIFAR-100 and image folders have no ImageNet-S test split to train probes on.
        return [name for name in TRAINED_MODELS if MODELS[name]["class_token"] and has_probe_split(model_dataset(name))]
    for name in names:
        if name not in TRAINED_MODELS:
            raise WorkflowError(
                f"invalid config: probing.models: '{name}' is not a key of models ({', '.join(TRAINED_MODELS)})."
            )
    return list(names)


def value_vector_models():
    """Models of tab_value_vector_classes: those memories.value_vectors.neurons names, else every
    trained model; a block index outside a listed model stops the dry run."""
    settings = config["memories"]["value_vectors"]
    key = "memories.value_vectors"
    if settings["neurons"] is None:
        names = TRAINED_MODELS
    else:
        listed = configured_subset(f"{key}.neurons", settings["neurons"], TRAINED_MODELS, "a trained model")
        names = [name for name in TRAINED_MODELS if name in listed]  # in figure order (model_order)
    block = settings["block_index"]
    for name in names:
        if block is not None and block >= MODELS[name]["num_blocks"]:
            raise WorkflowError(
                f"invalid config: {key}.block_index: {block} is outside {name}'s blocks "
                f"0..{MODELS[name]['num_blocks'] - 1} (0-based; null = the second to last)."
            )
    return list(names)


def explorer_models():
    """Trained models with an explorer page: explorer.models, by default all of them."""
    names = config["explorer"]["models"]
    if names is None:
        return list(TRAINED_MODELS)
    return configured_subset("explorer.models", names, TRAINED_MODELS, "a trained model")


def check_token_map_blocks():
    """token_maps.blocks name blocks every trained model has."""
    blocks = config["token_maps"]["blocks"] or []
    for name in TRAINED_MODELS:
        outside = [b for b in blocks if b >= MODELS[name]["num_blocks"]]
        if outside:
            raise WorkflowError(
                f"invalid config: token_maps.blocks: {outside} are outside {name}'s blocks "
                f"0..{MODELS[name]['num_blocks'] - 1} (0-based; null = five spread over the depth)."
            )


# Trained models whose dataset has segmentations: the class/context analyses need token labels.
SEGMENTED_MODELS = [name for name in TRAINED_MODELS if has_segmentation(model_dataset(name))]
# Checkpoints given as a file: fine-tuned here when the path is null, else converted.
FINETUNED_MODELS = [m for m in models_with_source("file") if MODELS[m]["weights"]["path"] is None]
USER_CHECKPOINT_MODELS = [m for m in models_with_source("file") if m not in FINETUNED_MODELS]
# Datasets of models fine-tuned here: a CIFAR-100 root you give must then hold the training split too.
FINETUNED_DATASETS = sorted({model_dataset(m) for m in FINETUNED_MODELS})
PERTURBATION_MODELS = [
    m
    for m in config["perturbation"]["models"] or SEGMENTED_MODELS
    if m in SEGMENTED_MODELS and MODELS[m]["class_token"]
]
EXPLAIN_MODELS = explain_models()
EXPLAIN_PERTURBATION_MODELS = explain_perturbation_models()
EXPLAIN_FIGURE_MODEL = explain_figure_model() if EXPLAIN_MODELS else None
PROBE_MODELS = probe_models()
# Probed models whose explainability perturbation curves exist (probe figures).
PROBE_PERTURBATION_MODELS = [name for name in PROBE_MODELS if name in EXPLAIN_PERTURBATION_MODELS]
VALUE_VECTOR_MODELS = value_vector_models()
EXPLORER_MODELS = explorer_models()
check_token_map_blocks()


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
        if config["probing"]["models"] is None and MODELS[name]["class_token"] and not has_probe_split(dataset):
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


def check_sample_images():
    for name, spec in SAMPLE_IMAGES.items():
        dataset = spec.get("stimulus", {}).get("dataset")
        if dataset is not None and dataset not in config["datasets"]:
            raise WorkflowError(
                f"invalid config: sample_images.{name}.stimulus.dataset '{dataset}' is not a key of datasets."
            )
        if "path" in spec and not os.path.isfile(spec["path"]):
            raise WorkflowError(f"sample_images.{name}.path: '{spec['path']}' does not exist. Fix the path.")


def check_sample_name(key, name):
    if name not in SAMPLE_IMAGES:
        raise WorkflowError(
            f"invalid config: {key}: '{name}' is not a key of sample_images ({', '.join(SAMPLE_IMAGES) or 'none'})."
        )


def check_expected_values():
    """Expected values name a model (or random twin), a sample image, and layers, tokens and
    classes that the model has."""
    for model, expected in EXPECTED_VALUES.items():
        key = f"expected_values.{model}"
        if model not in MODELS:
            raise WorkflowError(
                f"invalid config: {key}: '{model}' is not a model or random twin of this config ({', '.join(MODELS)})."
            )
        check_sample_name(f"{key}.image", expected["image"])
        spec = MODELS[model]
        n_tokens = TokenLayout.of(spec).n_tokens
        for kind in ("logits", "ranks", "top_classes"):
            for layer, values in expected.get(kind, {}).items():
                block = int(layer.split("_")[1])
                if block >= spec["num_blocks"]:
                    raise WorkflowError(
                        f"invalid config: {key}.{kind}.{layer}: model '{model}' has blocks 0..{spec['num_blocks'] - 1}."
                    )
                if len(values) > n_tokens:
                    raise WorkflowError(
                        f"invalid config: {key}.{kind}.{layer}: {len(values)} tokens given, model '{model}' has {n_tokens}."
                    )
                classes = [c for v in values for c in v] if kind == "top_classes" else values if kind == "ranks" else []
                if any(c >= spec["num_classes"] for c in classes):
                    raise WorkflowError(
                        f"invalid config: {key}.{kind}.{layer}: a class or rank beyond the model's {spec['num_classes']} classes."
                    )


def check_tutorial():
    if TUTORIAL_MODEL is None:
        return
    configured_subset(
        "tutorial.model",
        [TUTORIAL_MODEL],
        [name for name in TRAINED_MODELS if MODELS[name]["class_token"]],
        "a trained model with a class token",
    )
    for part in ("cls_logits", "heatmap"):
        check_sample_name(f"tutorial.{part}.image", config["tutorial"][part]["image"])
    block = config["tutorial"]["cls_logits"]["block"]
    if block is not None and block >= MODELS[TUTORIAL_MODEL]["num_blocks"]:
        raise WorkflowError(
            f"invalid config: tutorial.cls_logits.block: {block} is not a 0-based block of '{TUTORIAL_MODEL}'."
        )


check_sample_images()
check_expected_values()
check_tutorial()
