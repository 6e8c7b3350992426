# Explanations from the class embedding space (notebook 3, METHOD §4.12, §4.13) for the trained
# [CLS] models of explainability.models: one GPU job per model computes every stimulus's summed
# gradient map and Chefer relevance for its true class (results/explain/<model>/maps.parquet);
# one GPU job per perturbation model keeps the most or least important image tokens of every
# ordering (gradients, Chefer, linear probes, torch's seeded random permutations) and measures accuracy
# (perturbation_curves.parquet, per-image perturbation_correct.parquet). The heat-map figures
# compute their few panels from the checkpoint; the curves and the AUC table read the tables.

EXPLAIN_MODELS = explain_models()
EXPLAIN_PERTURBATION_MODELS = explain_perturbation_models()
EXPLAIN_FIGURE_MODEL = explain_figure_model() if EXPLAIN_MODELS else None
EXPLAIN_PERTURBATION_PARAMS = [
    {
        **describe_model(m),
        "curves": f"results/explain/{m}/perturbation_curves.parquet",
        "correct": f"results/explain/{m}/perturbation_correct.parquet",
    }
    for m in EXPLAIN_PERTURBATION_MODELS
]


rule explain_maps:
    input:
        unpack(lambda wildcards: dataset_files(model_dataset(wildcards.model))),
        stimuli=lambda wildcards: stimuli_table(wildcards.model),
        checkpoint=lambda wildcards: checkpoint_path(wildcards.model),
    output:
        "results/explain/{model}/maps.parquet",
    wildcard_constraints:
        model=alternatives(EXPLAIN_MODELS) if EXPLAIN_MODELS else "^$",
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
        explainability=config["explainability"],
        extraction=config["extraction"],
    threads: 4  # CPU threads of torch (or data loading on a GPU); capped by --cores
    resources:
        gpu=1,
        mem_mb=lambda wildcards, attempt: 8000 * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/explain_maps/{model}.log",
    benchmark:
        "results/benchmarks/explain_maps/{model}.tsv"
    script:
        "../workflow_scripts/explain_maps.py"


rule explain_perturbation:
    input:
        unpack(lambda wildcards: dataset_files(model_dataset(wildcards.model))),
        stimuli=lambda wildcards: stimuli_table(wildcards.model),
        checkpoint=lambda wildcards: checkpoint_path(wildcards.model),
        maps="results/explain/{model}/maps.parquet",
        # The linear_probe ordering, for models with probes (rules/probing.smk).
        probe_ranks=lambda wildcards: (
            f"results/probes/{wildcards.model}/ranks.parquet" if wildcards.model in probe_models() else []
        ),
    output:
        curves="results/explain/{model}/perturbation_curves.parquet",
        correct="results/explain/{model}/perturbation_correct.parquet",
    wildcard_constraints:
        model=alternatives(EXPLAIN_PERTURBATION_MODELS) if EXPLAIN_PERTURBATION_MODELS else "^$",
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
        explainability=config["explainability"],
        extraction=config["extraction"],
    threads: 4  # CPU threads of torch (or data loading on a GPU); capped by --cores
    resources:
        gpu=1,
        # Every preprocessed stimulus is held in memory (2.7 GB for 4550 images at 224²).
        mem_mb=lambda wildcards, attempt: 16000 * attempt,
        runtime=lambda wildcards, attempt: 120 * attempt,
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/explain_perturbation/{model}.log",
    benchmark:
        "results/benchmarks/explain_perturbation/{model}.tsv"
    script:
        "../workflow_scripts/explain_curves.py"


# Heat maps: a forward and a backward per panel image on the CPU (or GPU when visible).
for _name, _model in [
    ("fig_explain_head", EXPLAIN_FIGURE_MODEL),
    ("fig_explain_combined", EXPLAIN_FIGURE_MODEL),
]:

    rule:
        name:
            _name
        input:
            unpack(lambda wildcards, model=_model: dataset_files(model_dataset(model))),
            stimuli=stimuli_table(_model) if _model else [],
            checkpoint=checkpoint_path(_model) if _model else [],
        output:
            **figure_outputs(_name, "Explainability"),
        params:
            model=describe_model(_model) if _model else None,
            spec=MODELS[_model] if _model else None,
            explainability=config["explainability"],
        threads: 2
        conda:
            "../envs/explain.yaml"
        log:
            f"results/logs/figures/{_name}.log",
        script:
            "../workflow_scripts/explain_figure.py"


rule fig_explain_sum:
    input:
        unpack(lambda wildcards: dataset_files(model_dataset(wildcards.model))),
        stimuli=lambda wildcards: stimuli_table(wildcards.model),
        checkpoint=lambda wildcards: checkpoint_path(wildcards.model),
    output:
        pdf=report(
            "results/figures/fig_explain_sum_{model}.pdf",
            caption="../report/fig_explain_sum.rst",
            category="Explainability",
            subcategory="{model}",
        ),
        png="results/figures/fig_explain_sum_{model}.png",
        data="results/tables/fig_explain_sum_{model}.csv",
    wildcard_constraints:
        model=alternatives(EXPLAIN_MODELS) if EXPLAIN_MODELS else "^$",
    params:
        model=lambda wildcards: describe_model(wildcards.model),
        spec=lambda wildcards: MODELS[wildcards.model],
        explainability=config["explainability"],
    threads: 2
    conda:
        "../envs/explain.yaml"
    log:
        "results/logs/figures/fig_explain_sum_{model}.log",
    script:
        "../workflow_scripts/explain_figure.py"


for _name in ("fig_perturbation_neg", "fig_perturbation_pos", "tab_explain_perturbation_auc"):

    rule:
        name:
            _name
        input:
            [p["curves"] for p in EXPLAIN_PERTURBATION_PARAMS],
            [p["correct"] for p in EXPLAIN_PERTURBATION_PARAMS],
        output:
            **figure_outputs(_name, "Explainability"),
        params:
            models=EXPLAIN_PERTURBATION_PARAMS,
            seed=config["seed"],
            bootstrap=config["explainability"]["bootstrap"],
        conda:
            "../envs/plotting.yaml"
        log:
            f"results/logs/figures/{_name}.log",
        script:
            "../workflow_scripts/explain_curve_figure.py"
