from class_embedding import logs
from class_embedding.data import downloads

with logs.logged(snakemake):
    source = snakemake.params.source
    downloads.download(source["url"], snakemake.output[0], source.get("checksum"))
