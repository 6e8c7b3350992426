from class_embedding import logs, tables

with logs.logged(snakemake):
    # Reaching this rule means every input below was built and passed its check. The table of every
    # check, also after failures, is printed by the onsuccess/onerror hooks (job_status.report_preflight).
    tables.write_json({"checked": sorted(map(str, snakemake.input))}, snakemake.output[0])
