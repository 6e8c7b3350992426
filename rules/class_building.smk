# How blocks build the class representation (notebook 2, docs/method.md §4.5–§4.8): per-model figures of
# the sublayer change rates and residual composition, and of class- vs context-labelled tokens,
# and one table over all trained models. Functions in class_embedding.figures.class_building_figures
# (figures) and class_embedding.analyses.class_building_statistics (the table) are named like their
# rules; captions (report/<rule>.rst) say which paper figure each reproduces.

# Permutations of the class/context tests, as in the paper (docs/method.md §4.7).
CONTEXT_PERMUTATIONS = config["statistics"]["permutations"]


rule fig_class_building:
    input:
        by_model(layer_table_list),
    output:
        **figure_outputs("fig_class_building", "Class building", per_model=True),
    log:
        "results/logs/figures/fig_class_building_{model}.log",
    wildcard_constraints:
        model=alternatives(TRAINED_MODELS),
    group:
        FIGURE_GROUP
    conda:
        "../envs/plotting.yaml"
    params:
        model=model_description,
        seed=config["seed"],
    script:
        "../workflow_scripts/class_building_figure.py"


rule fig_context_identifiability:
    input:
        tables=by_model(layer_table_list, kinds=("hs",)),
        token_labels=by_model(token_labels_table),
    output:
        **figure_outputs("fig_context_identifiability", "Class building", per_model=True),
    log:
        "results/logs/figures/fig_context_identifiability_{model}.log",
    wildcard_constraints:
        model=alternatives(SEGMENTED_MODELS),
    group:
        FIGURE_GROUP
    conda:
        "../envs/plotting.yaml"
    params:
        model=model_description,
        seed=config["seed"],
        n_permutations=CONTEXT_PERMUTATIONS,
    script:
        "../workflow_scripts/class_building_figure.py"


rule tab_context_change_rate_diff:
    input:
        tables=[table for m in SEGMENTED_MODELS for table in layer_table_list(m, kinds=("hs", "attn"))],
        token_labels=sorted({token_labels_table(m) for m in SEGMENTED_MODELS}),
    output:
        **figure_outputs("tab_context_change_rate_diff", "Class building"),
    log:
        "results/logs/figures/tab_context_change_rate_diff.log",
    group:
        FIGURE_GROUP
    conda:
        "../envs/plotting.yaml"
    params:
        models=descriptions(SEGMENTED_MODELS),
        seed=config["seed"],
        n_permutations=CONTEXT_PERMUTATIONS,
    script:
        "../workflow_scripts/class_building_figure.py"
