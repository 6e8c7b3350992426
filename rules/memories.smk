# Key–value memories (docs/method.md §4.11, notebook 2 of §5). One torch job per trained model projects
# every value vector onto the class embeddings (and builds the random baseline model); the
# figure rules combine that cache with the activated memories stored by the extraction.
# Captions (report/<name>.rst) say which paper figure each target reproduces.


rule value_projections:
    input:
        checkpoint=layout.checkpoint("{model}"),
    output:
        **layout.memory_tables("{model}"),
    log:
        "results/logs/value_projections/{model}.log",
    wildcard_constraints:
        model=alternatives(TRAINED_MODELS),
    conda:
        "../envs/extraction.yaml"
    resources:
        mem_mb=per_attempt(4000),
    params:
        spec=model_spec,
        seed=config["seed"],
    script:
        "../workflow_scripts/value_projections.py"


for target, (needs, names, options) in MEMORY_TARGETS.items():

    rule:
        name:
            target
        input:
            memory_inputs(needs, names),
        output:
            **figure_outputs(target, category="Key-value memories"),
        log:
            f"results/logs/memories/{target}.log",
        group:
            FIGURE_GROUP
        conda:
            "../envs/plotting.yaml"
        params:
            models=descriptions(names),
            seed=config["seed"],
            n_permutations=config["statistics"]["permutations"],
            n_bootstrap=config["statistics"]["bootstrap"],
            options=options,
        script:
            "../workflow_scripts/memory_figure.py"
