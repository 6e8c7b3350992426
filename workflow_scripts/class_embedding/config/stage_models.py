"""Which models each stage of the workflow runs on, from the config: the configured models and
their random twins, the trained ones in figure order, and the lists of the stages a model's
dataset or token layout allows (class/context analyses need masks, perturbations and
explanations a [CLS] token, probes ImageNet-S's test split). Torch-free: the rules read them
when the workflow is parsed."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ..errors import InputError
from .checks import DATASET_KINDS, configured_subset


def dataset_kind(config: dict, dataset: str) -> str:
    return next(kind for kind in DATASET_KINDS if kind in config["datasets"][dataset])


def has_segmentation(config: dict, dataset: str) -> bool:
    """Whether a dataset has segmentations, hence per-token class/context labels (not CIFAR, nor
    an image folder without masks)."""
    kind = dataset_kind(config, dataset)
    if kind == "image_folder":
        return config["datasets"][dataset]["image_folder"].get("masks") is not None
    return kind != "cifar100"


def has_probe_split(config: dict, dataset: str) -> bool:
    """Whether a dataset has ImageNet-S's test split, on which the linear probes are trained."""
    return dataset_kind(config, dataset) not in ("cifar100", "image_folder")


def twin_seed(config: dict, name: str) -> int:
    """Seed of a random twin: the config seed mixed with the model name, stable across runs."""
    return config["seed"] * 1_000_003 + zlib.crc32(name.encode()) % 1_000_003


def all_models(config: dict) -> dict[str, dict]:
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
                "weights": {"source": "random_init", "seed": twin_seed(config, name)},
                "twin_of": name,
            }
    return models


def ordered_model_names(config: dict) -> list[str]:
    """The trained models in figure order: model_order, then the others by name."""
    names = sorted(config["models"])
    order = config["model_order"] or []
    unknown = [name for name in order if name not in config["models"]]
    if unknown:
        raise InputError(
            f"invalid config: model_order: {', '.join(unknown)} {'is not a key' if len(unknown) == 1 else 'are not keys'} "
            f"of models ({', '.join(names)})."
        )
    return list(order) + [name for name in names if name not in order]


@dataclass(frozen=True)
class StageModels:
    """The model names of each stage, in figure order."""

    models: dict[str, dict]  # every model to extract, random twins included, by name
    trained: list[str]
    segmented: list[str]  # whose dataset has masks: the class/context analyses
    finetuned: list[str]  # weights from a file that is null: fine-tuned here
    user_checkpoints: list[str]  # weights from a file you give
    perturbation: list[str]
    explain: list[str]
    explain_perturbation: list[str]
    explain_figure: str | None  # the model of fig_explain_head and fig_explain_combined
    probe: list[str]
    probe_perturbation: list[str]  # probed models whose explainability curves exist (probe figures)
    value_vectors: list[str]
    explorer: list[str]

    @classmethod
    def of(cls, config: dict) -> StageModels:
        models = all_models(config)
        trained = ordered_model_names(config)
        for name in config.get("paper_reference", {}):
            if name not in models:
                raise InputError(
                    f"invalid config: paper_reference.{name} is not a model or random twin of this config."
                )
        dataset = {name: spec["dataset"] for name, spec in models.items()}
        cls_models = [name for name in trained if models[name]["class_token"]]
        segmented = [name for name in trained if has_segmentation(config, dataset[name])]
        from_file = [name for name, spec in models.items() if spec["weights"]["source"] == "file"]
        finetuned = [name for name in from_file if models[name]["weights"]["path"] is None]
        explain = explain_models(config, cls_models)
        explain_perturbation = configured_or_all(
            config["explainability"]["perturbation_models"],
            "explainability.perturbation_models",
            explain,
            "an explained model (explainability.models)",
        )
        figure_model = config["explainability"]["figures"]["model"]
        if figure_model is not None and explain:
            configured_subset("explainability.figures.model", [figure_model], explain, "an explained model")
        probe = probe_models(config, trained, models, dataset)
        return cls(
            models=models,
            trained=trained,
            segmented=segmented,
            finetuned=finetuned,
            user_checkpoints=[name for name in from_file if name not in finetuned],
            perturbation=[
                name
                for name in config["perturbation"]["models"] or segmented
                if name in segmented and models[name]["class_token"]
            ],
            explain=explain,
            explain_perturbation=explain_perturbation,
            explain_figure=(figure_model or explain[0]) if explain else None,
            probe=probe,
            probe_perturbation=[name for name in probe if name in explain_perturbation],
            value_vectors=value_vector_models(config, trained, models),
            explorer=configured_or_all(config["explorer"]["models"], "explorer.models", trained, "a trained model"),
        )


def configured_or_all(names: list[str] | None, key: str, allowed: list[str], what: str) -> list[str]:
    """A config list of models (each one of ``allowed``), or all of ``allowed`` when it is null."""
    return list(allowed) if names is None else configured_subset(key, names, allowed, what)


def explain_models(config: dict, cls_models: list[str]) -> list[str]:
    """Trained [CLS] models with gradient maps: explainability.models, by default all of them."""
    return configured_or_all(
        config["explainability"]["models"], "explainability.models", cls_models, "a trained model with a class token"
    )


def probe_models(config: dict, trained: list[str], models: dict, dataset: dict) -> list[str]:
    """Trained models with linear probes: probing.models, by default every [CLS] model."""
    names = config["probing"]["models"]
    if names is None:
        # CIFAR-100 and image folders have no ImageNet-S test split to train probes on.
        return [name for name in trained if models[name]["class_token"] and has_probe_split(config, dataset[name])]
    for name in names:
        if name not in trained:
            raise InputError(f"invalid config: probing.models: '{name}' is not a key of models ({', '.join(trained)}).")
    return list(names)


def value_vector_models(config: dict, trained: list[str], models: dict) -> list[str]:
    """Models of tab_value_vector_classes: those memories.value_vectors.neurons names, else every
    trained model; a block index outside a listed model stops the dry run."""
    settings = config["memories"]["value_vectors"]
    key = "memories.value_vectors"
    if settings["neurons"] is None:
        names = trained
    else:
        listed = configured_subset(f"{key}.neurons", settings["neurons"], trained, "a trained model")
        names = [name for name in trained if name in listed]  # in figure order (model_order)
    block = settings["block_index"]
    for name in names:
        if block is not None and block >= models[name]["num_blocks"]:
            raise InputError(
                f"invalid config: {key}.block_index: {block} is outside {name}'s blocks "
                f"0..{models[name]['num_blocks'] - 1} (0-based; null = the second to last)."
            )
    return list(names)
