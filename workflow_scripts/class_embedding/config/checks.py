"""The checks of a config that stop a dry run before any job: the schema, the datasets and paths
you give, the weights, the text, and what the sample images, expected values, tutorial and token
maps name. Torch-free: ``rules/common.smk`` runs them when the workflow is parsed. Each raises an
:class:`InputError` naming the key and what to do."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

import jsonschema
import yaml

from ..config_files import check_no_duplicate_keys
from ..data.image_folder import scan_image_folder
from ..errors import InputError
from ..models.tokens import TokenLayout
from ..results_layout import RESULTS
from ..table_check import unreadable_tables

# How a dataset is obtained: an existing ImageNet-S layout, the demo generator, prepared by
# rules/data.smk from downloads and your files (ImageNet-S919, CIFAR-100), or your own labelled
# image folder.
DATASET_KINDS = ("root", "generate", "imagenet_s", "cifar100", "image_folder")


def check_config_files(paths: Iterable[str | os.PathLike]) -> None:
    """A key given twice in a config file is an error, not a silent override (YAML loaders keep
    the last one)."""
    for path in paths:
        try:
            check_no_duplicate_keys(path)
        except InputError as err:
            raise InputError(f"invalid config: {err}") from None


def check_tables_complete(root: str = RESULTS) -> None:
    """A Parquet table cut short (a killed copy, a full disk) is not rebuilt by Snakemake, which
    only looks at its time stamp; its readers would fail after deleting their old outputs."""
    broken = unreadable_tables(root)
    if broken:
        raise InputError(
            f"{len(broken)} Parquet table(s) under {root}/ are incomplete (cut short by a killed job, a full "
            f"disk or a partial copy): {', '.join(broken)}. Delete them and rebuild them as targets "
            f"(rm {' '.join(broken)} && snakemake --cores <n> {' '.join(broken)}, with your --configfile), then "
            "run as before: what depends on them is rebuilt because they are newer."
        )


def check_free_text(value: Any, key: str = "(top level)") -> None:
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
        raise InputError(
            f"invalid config: {key}: {value!r} contains '<', which the config does not accept: the report "
            "embeds config text in a script element, where '</script>' or '<!--' would break out of it. "
            "Write it without '<' (a display name such as 'ViT < 1M' as 'ViT under 1M')."
        )


def schema_error(config: dict, schema_path: str | os.PathLike) -> str | None:
    """The schema's verdict on the config, naming the offending key; None when it passes."""
    with open(schema_path) as handle:
        schema = yaml.safe_load(handle)
    validator = jsonschema.Draft202012Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(config))
    if error is None:
        return None
    key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
    return f"invalid config: {key}: {error.message}. Fix it; config/schema.yaml documents every key."


def check_datasets(config: dict) -> list[str]:
    """Every model names a dataset; every dataset is of one kind and its paths exist. Returns what
    the scan of image folders says on the console (classes left out, short folders)."""
    for name, spec in config["models"].items():
        if spec["dataset"] not in config["datasets"]:
            raise InputError(
                f"invalid config: models.{name}.dataset '{spec['dataset']}' is not a key of datasets "
                f"({', '.join(config['datasets'])}): name one of them or add the dataset."
            )
    messages = []
    for name, dataset in config["datasets"].items():
        kinds = [kind for kind in DATASET_KINDS if kind in dataset]
        if len(kinds) != 1:
            raise InputError(
                f"invalid config: datasets.{name} needs exactly one of {', '.join(DATASET_KINDS)} "
                f"(it has {', '.join(kinds) or 'none'})."
            )
        if kinds[0] in ("imagenet_s", "cifar100"):
            check_paper_inputs(name, dataset)
        elif "image_folder" in dataset:
            messages += check_image_folder(config, name, dataset["image_folder"])
        elif "root" in dataset and not os.path.isdir(dataset["root"]):
            raise InputError(
                f"datasets.{name}.root: '{dataset['root']}' does not exist. Point it at the directory "
                f"holding ImageNetS919/ (docs/paper.md says how to obtain ImageNet-S)."
            )
    return messages


def check_image_folder(config: dict, name: str, folder: dict) -> list[str]:
    for key in ("root", "masks"):
        path = folder.get(key)
        if path is not None and not os.path.isdir(path):
            raise InputError(
                f"datasets.{name}.image_folder.{key}: '{path}' does not exist. Point it at a directory of "
                f"class folders (<{key}>/<label>/{'<stem>.png' if key == 'masks' else '*.jpg'})."
            )
    if folder["labels"] == "wnid" and folder.get("class_names") is not None:
        raise InputError(
            f"invalid config: datasets.{name}.image_folder: labels: wnid takes the wnids from timm's ImageNet "
            "info; drop class_names or use labels: class_name or index."
        )
    return scan_image_folder_classes(config, name, folder)


def scan_image_folder_classes(config: dict, name: str, folder: dict) -> list[str]:
    """The class folders of an image folder, listed (no image is opened): what is left out comes
    back as console messages, and too few classes, clashing or unreadable names stop the dry run."""
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
        raise InputError(f"datasets.{name}.image_folder: {err}") from None
    return [f"datasets.{name}.image_folder: {message}" for message in scan.messages]


def check_paper_inputs(name: str, dataset: dict) -> None:
    """User-given paths of the paper run exist (a dry run with a wrong path stops here)."""
    if "imagenet_s" in dataset:
        spec = dataset["imagenet_s"]
        paths = [("imagenet_s.imagenet_val", spec["imagenet_val"])]
        paths += [(f"imagenet_s.{key}", spec.get(key)) for key in ("stimuli_csv", "synset_mapping")]
    else:
        spec = dataset["cifar100"]
        paths = [("cifar100.root", spec.get("root"))]
        if spec.get("root") is None and "download" not in spec:
            raise InputError(f"invalid config: datasets.{name}.cifar100 needs a root or a download block.")
        if spec.get("root") is None and not spec["download"].get("checksum"):
            # The archive holds pickles, which run code when read: a download is only ever read
            # after a pinned checksum matched, never trusted on first sight.
            raise InputError(
                f"invalid config: datasets.{name}.cifar100.download.checksum is null, but the CIFAR-100 "
                f"archive is a pickle and is read only after its pinned checksum matched. Set it (the "
                f"official archive's is md5:eb9058c3a382ffc7106e4002c42a8d85), or give a root you trust."
            )
    for key, path in paths:
        if path is not None and not os.path.exists(path):
            raise InputError(
                f"datasets.{name}.{key}: '{path}' does not exist. Fix the path in the config "
                f"(docs/paper.md says where to get the data)."
            )


def check_weights(config: dict) -> None:
    """Pretrained tags are explicit and match the architecture; user checkpoints exist."""
    for name, spec in config["models"].items():
        weights = spec["weights"]
        if weights["source"] == "timm" and weights["tag"].split(".")[0] != spec["arch"]:
            raise InputError(
                f"invalid config: models.{name}.weights.tag '{weights['tag']}' is not a tag of arch '{spec['arch']}'."
            )
        if weights["source"] == "file":
            path = weights["path"]
            if path is None and not weights.get("finetune", {}).get("init_tag"):
                raise InputError(
                    f"invalid config: models.{name}.weights: path is null, so finetune.init_tag must name the "
                    f"timm weights that fine-tuning starts from."
                )
            if path is not None and not os.path.isfile(path):
                raise InputError(
                    f"models.{name}.weights.path: checkpoint '{path}' does not exist. Fix the path, or set it "
                    f"to null to fine-tune the model instead (docs/paper.md)."
                )
        baseline = spec.get("random_baseline")
        if baseline is not None and not config["models"].get(baseline, {}).get("random_twin", True):
            raise InputError(
                f"invalid config: models.{name}.random_baseline '{baseline}' must be a model with random_twin: true."
            )


def configured_subset(key: str, names: Iterable[str], allowed: list[str], what: str) -> list[str]:
    """A config list of model names, each checked against the allowed ones."""
    for name in names:
        if name not in allowed:
            raise InputError(f"invalid config: {key}: '{name}' is not {what} ({', '.join(allowed) or 'none'}).")
    return list(names)


def check_token_map_blocks(config: dict, models: dict, trained: list[str]) -> None:
    """token_maps.blocks name blocks every trained model has."""
    blocks = config["token_maps"]["blocks"] or []
    for name in trained:
        outside = [b for b in blocks if b >= models[name]["num_blocks"]]
        if outside:
            raise InputError(
                f"invalid config: token_maps.blocks: {outside} are outside {name}'s blocks "
                f"0..{models[name]['num_blocks'] - 1} (0-based; null = five spread over the depth)."
            )


def check_sample_images(config: dict) -> None:
    for name, spec in config["sample_images"].items():
        dataset = spec.get("stimulus", {}).get("dataset")
        if dataset is not None and dataset not in config["datasets"]:
            raise InputError(
                f"invalid config: sample_images.{name}.stimulus.dataset '{dataset}' is not a key of datasets."
            )
        if "path" in spec and not os.path.isfile(spec["path"]):
            raise InputError(f"sample_images.{name}.path: '{spec['path']}' does not exist. Fix the path.")


def check_sample_name(config: dict, key: str, name: str) -> None:
    samples = config["sample_images"]
    if name not in samples:
        raise InputError(
            f"invalid config: {key}: '{name}' is not a key of sample_images ({', '.join(samples) or 'none'})."
        )


def check_expected_values(config: dict, models: dict) -> None:
    """Expected values name a model (or random twin), a sample image, and layers, tokens and
    classes that the model has."""
    for model, expected in config["expected_values"].items():
        key = f"expected_values.{model}"
        if model not in models:
            raise InputError(
                f"invalid config: {key}: '{model}' is not a model or random twin of this config ({', '.join(models)})."
            )
        check_sample_name(config, f"{key}.image", expected["image"])
        spec = models[model]
        n_tokens = TokenLayout.of(spec).n_tokens
        for kind in ("logits", "ranks", "top_classes"):
            for layer, values in expected.get(kind, {}).items():
                block = int(layer.split("_")[1])
                if block >= spec["num_blocks"]:
                    raise InputError(
                        f"invalid config: {key}.{kind}.{layer}: model '{model}' has blocks 0..{spec['num_blocks'] - 1}."
                    )
                if len(values) > n_tokens:
                    raise InputError(
                        f"invalid config: {key}.{kind}.{layer}: {len(values)} tokens given, model '{model}' has {n_tokens}."
                    )
                classes = [c for v in values for c in v] if kind == "top_classes" else values if kind == "ranks" else []
                if any(c >= spec["num_classes"] for c in classes):
                    raise InputError(
                        f"invalid config: {key}.{kind}.{layer}: a class or rank beyond the model's {spec['num_classes']} classes."
                    )


def check_tutorial(config: dict, models: dict, trained: list[str]) -> None:
    model = config["tutorial"]["model"]
    if model is None:
        return
    cls_models = [name for name in trained if models[name]["class_token"]]
    configured_subset("tutorial.model", [model], cls_models, "a trained model with a class token")
    for part in ("cls_logits", "heatmap"):
        check_sample_name(config, f"tutorial.{part}.image", config["tutorial"][part]["image"])
    block = config["tutorial"]["cls_logits"]["block"]
    if block is not None and block >= models[model]["num_blocks"]:
        raise InputError(f"invalid config: tutorial.cls_logits.block: {block} is not a 0-based block of '{model}'.")
