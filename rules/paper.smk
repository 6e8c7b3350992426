# The paper run's summary: our identifiability rates and accuracies beside the paper's numbers
# (config paper_reference, docs/method.md §5). In rule all only when the config gives those numbers.


rule tab_reproduction_vs_paper:
    input:
        rates=rules.tab_identifiability_rates.output.csv,
        random=rules.tab_identifiability_random.output.csv,
    output:
        **figure_outputs("tab_reproduction_vs_paper", category="Reproduction"),
    log:
        "results/logs/tables/tab_reproduction_vs_paper.log",
    group:
        FIGURE_GROUP
    conda:
        "../envs/analysis.yaml"
    params:
        reference=config.get("paper_reference", {}),
    script:
        "../workflow_scripts/reproduction_table.py"
