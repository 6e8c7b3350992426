# How blocks build the class representation (notebook 2, METHOD §4.5–§4.8): per-model figures of
# the sublayer change rates and residual composition, and of class- vs context-labelled tokens,
# and one table over all trained models. Functions in class_embedding.class_building_figures are
# named like their rules; captions (report/<rule>.rst) say which paper figure each reproduces.

# Permutations of the class/context tests, as in the paper (METHOD §4.7).
CONTEXT_PERMUTATIONS = config["statistics"]["permutations"]


rule fig_class_building:
    input:
        lambda w: layer_tables(w.model),
    output:
        pdf=report(
            "results/figures/fig_class_building_{model}.pdf",
            caption="../report/fig_class_building.rst",
            category="Class building",
            subcategory="{model}",
        ),
        png="results/figures/fig_class_building_{model}.png",
        data="results/tables/fig_class_building_{model}.csv",
    wildcard_constraints:
        model=alternatives(TRAINED_MODELS),
    params:
        model=lambda w: describe_model(w.model),
        seed=config["seed"],
    conda:
        "../envs/plotting.yaml"
    log:
        "results/logs/figures/fig_class_building_{model}.log",
    script:
        "../workflow_scripts/class_building_figure.py"


rule fig_context_identifiability:
    input:
        tables=lambda w: layer_tables(w.model, kinds=("hs",)),
        token_labels=lambda w: describe_model(w.model)["token_labels"],
    output:
        pdf=report(
            "results/figures/fig_context_identifiability_{model}.pdf",
            caption="../report/fig_context_identifiability.rst",
            category="Class building",
            subcategory="{model}",
        ),
        png="results/figures/fig_context_identifiability_{model}.png",
        data="results/tables/fig_context_identifiability_{model}.csv",
    wildcard_constraints:
        model=alternatives(SEGMENTED_MODELS),
    params:
        model=lambda w: describe_model(w.model),
        seed=config["seed"],
        n_permutations=CONTEXT_PERMUTATIONS,
    conda:
        "../envs/plotting.yaml"
    log:
        "results/logs/figures/fig_context_identifiability_{model}.log",
    script:
        "../workflow_scripts/class_building_figure.py"


rule tab_context_change_rate_diff:
    input:
        tables=[table for m in SEGMENTED_MODELS for table in layer_tables(m, kinds=("hs", "attn"))],
        token_labels=sorted({describe_model(m)["token_labels"] for m in SEGMENTED_MODELS}),
    output:
        csv=report(
            "results/tables/tab_context_change_rate_diff.csv",
            caption="../report/tab_context_change_rate_diff.rst",
            category="Class building",
        ),
    params:
        models=[describe_model(m) for m in SEGMENTED_MODELS],
        seed=config["seed"],
        n_permutations=CONTEXT_PERMUTATIONS,
    conda:
        "../envs/plotting.yaml"
    log:
        "results/logs/figures/tab_context_change_rate_diff.log",
    script:
        "../workflow_scripts/class_building_figure.py"
