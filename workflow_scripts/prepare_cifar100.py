from class_embedding import logs
from class_embedding.data import cifar

with logs.logged(snakemake):
    cifar.prepare_cifar100(
        snakemake.input.source, snakemake.output.images, snakemake.output.pickles, snakemake.params.checksum
    )
