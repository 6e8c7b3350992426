# Figures and tables of notebook 1 that concern class identifiability (METHOD §4.1–§4.4, §5).
# One rule per target, named like its target and its function in class_embedding.figures; all
# share one entry point. Captions (report/<name>.rst) say which paper figure each reproduces.


def figure_outputs(name):
    """A figure's PDF (in the report), its PNG and the plotted numbers; a table's CSV."""
    caption = f"../report/{name}.rst"
    if name.startswith("tab_"):
        return {"csv": report(f"results/tables/{name}.csv", caption=caption, category="Identifiability")}
    return {
        "pdf": report(f"results/figures/{name}.pdf", caption=caption, category="Identifiability"),
        "png": f"results/figures/{name}.png",
        "data": f"results/tables/{name}.csv",
    }


# target name -> whether it compares with the random twins
IDENTIFIABILITY_TARGETS = {
    "tab_identifiability_rates": False,
    "tab_identifiability_random": True,
    "fig_identifiability_hist": False,
    "fig_identifiability_evolution": True,
    "fig_identifiability_mean_evolution": False,
    "fig_change_rate": False,
}

for target, with_twins in IDENTIFIABILITY_TARGETS.items():

    rule:
        name:
            target
        input:
            identifiability_inputs(twins=with_twins),
        output:
            **figure_outputs(target),
        params:
            models=figure_models(),
            seed=config["seed"],
        log:
            f"results/logs/figures/{target}.log",
        script:
            "../workflow_scripts/figure.py"
