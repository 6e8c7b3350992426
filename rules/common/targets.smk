# Figures and tables: their outputs and inputs, the targets of rule all and what it skips; the
# sample images, weight checks and tutorial figures (rules/checks.smk, rules/tutorial.smk), and
# what `snakemake preflight` fetches. Included by rules/common.smk; no rules here.


# Figures and tables ------------------------------------------------------------------------------

# Plotting and table jobs take seconds. They form the group "figures", which profiles/slurm leaves
# at one SLURM job each (a group job asks for the sum of its members' cores and memory); on a
# cluster with large nodes, --group-components figures=8 shares one SLURM job between eight.
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
        return {"csv": report(layout.table_csv(stem), caption=caption, category=category, **subcategory)}
    return {
        "pdf": report(layout.figure_pdf(stem), caption=caption, category=category, **subcategory),
        "png": layout.figure_png(stem),
        "data": layout.table_csv(stem),
    }


def identifiability_inputs(twins):
    """Hidden-state tables and predictions of every configured model, with its twin when asked."""
    files = []
    for name in TRAINED_MODELS:
        for model in [name, twin_name(name)] if twins else [name]:
            if model in MODELS:
                files += layer_table_list(model, ("hs",))
                files.append(layout.predictions_table(model))
    return files


def memory_inputs(needs, names):
    """What a target reads for the given models: the weight-derived cache (per class or per
    memory), the activated memories of every attn/mlp sublayer with the predictions, the
    stimulus categories."""
    paths = {
        "classes": [layout.memory_tables(name)["classes"] for name in names],
        "memories": [layout.memory_tables(name)["memories"] for name in names],
        "extraction": [
            path
            for name in names
            for path in layer_table_list(name, ("attn", "mlp")) + [layout.predictions_table(name)]
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
# perturbation rule -> its variants (by the wildcard naming them; their tables are
# results_layout.PERTURBATION_NAMES), and whether it reads the token labels
PERTURBATION_EXPERIMENTS = {
    "attn_perturbation": {"variants": {"type": ("self_only", "no_cls")}, "token_labels": False},
    "token_perturbation": {"variants": {"mask": ("context", "class_label")}, "token_labels": True},
}


def perturbation_outputs(rule):
    """Per (model, variant): the rank of the correct class for every token of the last block, and
    the predictions."""
    return layout.perturbation_tables("{model}", layout.PERTURBATION_NAMES[rule])


# table -> the perturbation rule whose outputs it compares with the extraction
PERTURBATION_TABLES = {"tab_attn_perturbation": "attn_perturbation", "tab_context_perturbation": "token_perturbation"}
EXPLAIN_HEATMAP_FIGURES = ("fig_explain_head", "fig_explain_combined")
EXPLAIN_CURVE_TARGETS = ("fig_perturbation_neg", "fig_perturbation_pos", "tab_explain_perturbation_auc")
# tutorial figure -> its part of the tutorial config
TUTORIAL_FIGURES = {"fig_tutorial_cls_logits": "cls_logits", "fig_tutorial_heatmap": "heatmap"}


def target_file(name):
    return layout.table_csv(name) if name.startswith("tab_") else layout.figure_pdf(name)


def per_model_targets(names, models):
    return [layout.figure_pdf(f"{name}_{model}") for name in names for model in models]


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
    targets += [layout.explain_tables(model)["maps"] for model in EXPLAIN_MODELS]
    targets += per_model_targets(["fig_token_maps"], TRAINED_MODELS)
    if EXPLORER_MODELS:
        targets.append(layout.explorer_index())
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
        return {"images": dataset_files(dataset)["images"], "stimuli": layout.stimuli_table(dataset)}
    return {"sample": layout.sample_path(name) if "url" in spec else spec["path"]}


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
    files = [layout.sample_path(name) for name in DOWNLOADED_SAMPLES]
    for dataset in config["datasets"]:
        files += [layout.download_path(dataset, item) for item in dataset_download_items(dataset)]
    for model in MODELS:
        files.append(layout.finetune_init_checkpoint(model) if model in FINETUNED_MODELS else layout.checkpoint(model))
    files += [weight_check_file(model) for model in EXPECTED_VALUES]
    files.append(layout.user_inputs_check())
    return files
