# Checks before any GPU hour. The weight check runs every model that declares expected values
# (expected_values) on a sample image through its own preprocessing and the lens; every
# extraction of that model waits for it (rules/extract.smk). `snakemake preflight` fetches,
# converts and audits everything small, runs the weight checks and checks your paths, without
# reading the ImageNet archive's content or needing a GPU: what to run on a login node first.
# Offline, every fetching job fails in seconds (one reachability check per host, shared through
# .snakemake/class_embedding/unreachable_hosts.json) naming what it needs and how to supply it
# without network. The run ends with one table of every check, also after failures with -k
# (class_embedding/job_status.py, printed by the onsuccess/onerror hooks of rules/common.smk).


# Fetched like a dataset's downloads (rule download: cached, local, retried inside the job).
use rule download as download_sample_image with:
    output:
        layout.sample_path("{sample}"),
    log:
        "results/logs/download_sample_image/{sample}.log",
    wildcard_constraints:
        sample=alternatives(DOWNLOADED_SAMPLES),
    retries: 0
    params:
        source=sample_source,


rule weight_check:
    input:
        unpack(weight_check_sample_inputs),
        checkpoint=by_model(layout.checkpoint),
    output:
        layout.weight_check("{model}"),
    log:
        "results/logs/weight_check/{model}.log",
    wildcard_constraints:
        model=alternatives(EXPECTED_VALUES),
    # One image on the CPU (seconds): answers on the submitting machine, before GPU jobs start.
    localrule: True
    conda:
        "../envs/extraction.yaml"
    threads: 2
    params:
        spec=model_spec,
        expected=expected_values,
        sample=weight_check_sample,
    script:
        "../workflow_scripts/weight_check.py"


rule check_user_inputs:
    output:
        layout.user_inputs_check(),
    log:
        "results/logs/check_user_inputs.log",
    localrule: True
    conda:
        "../envs/extraction.yaml"
    params:
        datasets=config["datasets"],
        finetuned_datasets=FINETUNED_DATASETS,
    script:
        "../workflow_scripts/check_user_inputs.py"


rule preflight:
    input:
        preflight_inputs(),
    output:
        layout.preflight_check(),
    log:
        "results/logs/preflight.log",
    localrule: True
    conda:
        "../envs/analysis.yaml"
    script:
        "../workflow_scripts/preflight.py"
