# Figures and tables of notebook 1 that concern class identifiability (docs/method.md §4.1–§4.4, §5).
# One rule per target, named like its target and its function in class_embedding.figures; all
# share one entry point. Captions (report/<name>.rst) say which paper figure each reproduces.


for target, with_twins in IDENTIFIABILITY_TARGETS.items():

    rule:
        name:
            target
        input:
            identifiability_inputs(twins=with_twins),
        output:
            **figure_outputs(target),
        log:
            f"results/logs/figures/{target}.log",
        group:
            FIGURE_GROUP
        conda:
            "../envs/plotting.yaml"
        params:
            models=descriptions(TRAINED_MODELS),
            seed=config["seed"],
        script:
            "../workflow_scripts/identifiability_figure.py"
