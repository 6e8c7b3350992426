# Linear probes (notebook 4, METHOD §4.14): ridge probes for every layer kind, block and token,
# trained on the probe split (the dataset's test split, probing.images_per_class per class) and
# scored on the stimuli. One GPU job per model fits all probes in one streaming pass over the
# probe images and scores them in one pass over the stimuli (chunked by blocks when the
# statistics exceed probing.memory_gb); then per-model figures beside the class projection and
# the perturbation test of EXPLAIN (results/explain/<model>/perturbation_curves.parquet).

PROBE_MODELS = probe_models()
PROBE_PERTURBATION_MODELS = probe_perturbation_models()


rule probe_stimuli:
    input:
        unpack(lambda wildcards: dataset_files(wildcards.dataset)),
    output:
        "results/data/{dataset}/probe_stimuli.parquet",
    params:
        probing=config["probing"],
        exclude_wnids=config["stimuli"]["exclude_wnids"],
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/probe_stimuli/{dataset}.log",
    script:
        "../workflow_scripts/probe_stimuli.py"


rule linear_probes:
    input:
        unpack(lambda wildcards: dataset_files(model_dataset(wildcards.model))),
        probe_stimuli=lambda wildcards: f"results/data/{model_dataset(wildcards.model)}/probe_stimuli.parquet",
        stimuli=lambda wildcards: stimuli_table(wildcards.model),
        checkpoint=lambda wildcards: checkpoint_path(wildcards.model),
    output:
        ranks="results/probes/{model}/ranks.parquet",
        accuracy="results/probes/{model}/accuracy.parquet",
    wildcard_constraints:
        model=alternatives(PROBE_MODELS) if PROBE_MODELS else "^$",
    params:
        spec=lambda wildcards: MODELS[wildcards.model],
        probing=config["probing"],
        extraction=config["extraction"],
    threads: 4  # CPU threads of torch (or data loading on a GPU); capped by --cores
    resources:
        gpu=1,
        # Host memory holds the statistics too when the job runs on the CPU.
        mem_mb=lambda wildcards, attempt: (8000 + int(1000 * config["probing"]["memory_gb"])) * attempt,
        runtime=lambda wildcards, attempt: 60 * attempt,
    conda:
        "../envs/extraction.yaml"
    log:
        "results/logs/linear_probes/{model}.log",
    benchmark:
        "results/benchmarks/linear_probes/{model}.tsv"
    script:
        "../workflow_scripts/probe_fit.py"


rule fig_probe_vs_projection_acc:
    input:
        probe_accuracy="results/probes/{model}/accuracy.parquet",
        layers=lambda wildcards: layer_tables(wildcards.model),
    output:
        pdf=report(
            "results/figures/fig_probe_vs_projection_acc_{model}.pdf",
            caption="../report/fig_probe_vs_projection_acc.rst",
            category="Linear probes",
            subcategory="{model}",
        ),
        png="results/figures/fig_probe_vs_projection_acc_{model}.png",
        data="results/tables/fig_probe_vs_projection_acc_{model}.csv",
    wildcard_constraints:
        model=alternatives(PROBE_MODELS) if PROBE_MODELS else "^$",
    params:
        model=lambda wildcards: describe_model(wildcards.model),
        seed=config["seed"],
        n_bootstrap=config["statistics"]["bootstrap"],
    conda:
        "../envs/plotting.yaml"
    log:
        "results/logs/figures/fig_probe_vs_projection_acc_{model}.log",
    script:
        "../workflow_scripts/probe_figure.py"


rule fig_probe_perturbation:
    input:
        curves="results/explain/{model}/perturbation_curves.parquet",
        predictions=lambda wildcards: f"{extract_dir(wildcards.model)}/predictions.parquet",
    output:
        pdf=report(
            "results/figures/fig_probe_perturbation_{model}.pdf",
            caption="../report/fig_probe_perturbation.rst",
            category="Linear probes",
            subcategory="{model}",
        ),
        png="results/figures/fig_probe_perturbation_{model}.png",
        data="results/tables/fig_probe_perturbation_{model}.csv",
    wildcard_constraints:
        model=alternatives(PROBE_PERTURBATION_MODELS) if PROBE_PERTURBATION_MODELS else "^$",
    params:
        model=lambda wildcards: describe_model(wildcards.model),
    conda:
        "../envs/plotting.yaml"
    log:
        "results/logs/figures/fig_probe_perturbation_{model}.log",
    script:
        "../workflow_scripts/probe_figure.py"


rule fig_linear_probing_all:
    input:
        probe_accuracy="results/probes/{model}/accuracy.parquet",
        layers=lambda wildcards: layer_tables(wildcards.model),
        curves="results/explain/{model}/perturbation_curves.parquet",
        predictions=lambda wildcards: f"{extract_dir(wildcards.model)}/predictions.parquet",
    output:
        pdf=report(
            "results/figures/fig_linear_probing_all_{model}.pdf",
            caption="../report/fig_linear_probing_all.rst",
            category="Linear probes",
            subcategory="{model}",
        ),
        png="results/figures/fig_linear_probing_all_{model}.png",
        data="results/tables/fig_linear_probing_all_{model}.csv",
    wildcard_constraints:
        model=alternatives(PROBE_PERTURBATION_MODELS) if PROBE_PERTURBATION_MODELS else "^$",
    params:
        model=lambda wildcards: describe_model(wildcards.model),
        seed=config["seed"],
        n_bootstrap=config["statistics"]["bootstrap"],
    conda:
        "../envs/plotting.yaml"
    log:
        "results/logs/figures/fig_linear_probing_all_{model}.log",
    script:
        "../workflow_scripts/probe_figure.py"
