from class_embedding import downloads, logs

with logs.logged(snakemake):
    source = snakemake.params.source
    downloads.download(source["url"], snakemake.output[0], source.get("checksum"))
