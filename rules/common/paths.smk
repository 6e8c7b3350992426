# Datasets and file names: where each dataset's files live, what is fetched (under resources/)
# and what is computed (under results/), and the description of each model that jobs read.
# Included by rules/common.smk; no rules here.


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
        return layout.dataset_dir(dataset)
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
    files = imagenet_s_layout(layout.dataset_dir("{dataset}"))
    return {**files, "images": directory(files["images"])}


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
    return root if root is not None else layout.download_path(wildcards.dataset, "cifar100")


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


# Paths: every name comes from class_embedding.results_layout (imported as layout); these helpers
# only look up a model's dataset, grid or block count. Inputs fetched from elsewhere (dataset
# downloads, sample images, the weight cache) live under resources/, so that deleting results/
# never throws away what took hours to download. Prepared datasets and converted checkpoints stay
# under results/: they are rebuilt from resources/ without the network.


def model_dataset(model):
    return MODELS[model]["dataset"]


def stimuli_table(model):
    return layout.stimuli_table(model_dataset(model))


def layer_names(model):
    return list(layer_tables(model))


def layer_tables(model, kinds=layout.LAYER_KINDS):
    """Layer name -> table of a model's extraction (a dict: as a rule input, its paths)."""
    return layout.layer_tables(model, MODELS[model]["num_blocks"], kinds)


def layer_table_list(model, kinds=layout.LAYER_KINDS):
    return list(layer_tables(model, kinds).values())


def token_labels_table(model):
    """Per-token class/context labels of a model's token grid; None where the dataset has no segmentations."""
    dataset = model_dataset(model)
    if not has_segmentation(dataset):
        return None
    return layout.token_labels_table(dataset, TokenLayout.of(MODELS[model]).grid_name)


def weight_check_file(model):
    """The weight check an extraction waits for, when the model declares expected values."""
    return layout.weight_check(model) if model in EXPECTED_VALUES else []


def perturbation_tables(model):
    """Perturbation rule -> variant -> its tables ({"ranks", "predictions"}) for one model."""
    tables = {}
    for rule, experiment in PERTURBATION_EXPERIMENTS.items():
        ((wildcard, variants),) = experiment["variants"].items()
        pattern = layout.PERTURBATION_NAMES[rule]
        tables[rule] = {v: layout.perturbation_tables(model, pattern.format(**{wildcard: v})) for v in variants}
    return tables


# The model description ---------------------------------------------------------------------------


def twin_name(name):
    """The random model a trained model is compared with: its own twin, else its random_baseline's."""
    spec = config["models"][name]
    source = name if spec["random_twin"] else spec.get("random_baseline")
    return f"{source}_random" if source else None


def model_files(name):
    """Every table of a model that a figure, table or page may read, by what it holds."""
    return {
        "layers": layer_tables(name),
        "predictions": layout.predictions_table(name),
    }


@functools.cache  # built once per model: rules pass these dicts as params
def describe_model(name):
    """What analysis scripts need to know about a trained model and the paths of its tables (params;
    the rules that pass it list the tables they read as inputs, from the same helpers)."""
    spec = MODELS[name]
    twin = twin_name(name)
    return {
        "name": name,
        "display_name": spec["display_name"],
        "num_blocks": spec["num_blocks"],
        "num_classes": spec["num_classes"],
        "class_token": spec["class_token"],
        "distillation_token": spec["distillation_token"],
        "register_tokens": spec["register_tokens"],
        "token_grid": spec["token_grid"],
        "block_group": spec["block_group"],
        "stimuli": stimuli_table(name),
        "token_labels": token_labels_table(name),
        "checkpoint": layout.checkpoint(name),
        **model_files(name),
        "random_twin": {"name": twin, **model_files(twin)} if twin in MODELS else None,
        "memories": layout.memory_tables(name),
        "perturbations": perturbation_tables(name),
        **{table: path for table, path in layout.explain_tables(name).items() if table != "maps"},
    }


def descriptions(names):
    return [describe_model(name) for name in names]
