"""timm's pretrained weights by tag: where they come from, whether the weight cache holds them,
and fetching them so that an offline machine fails in seconds, saying how to run without network.

The workflow gives timm the config's ``weights_cache`` as its cache directory (not ``HF_HOME``):
weights on the Hugging Face Hub are kept there in the Hub's own layout
(``models--timm--<tag>/snapshots/<commit>/model.safetensors``). Weights found there are loaded from
the file, without network; otherwise the Hub is checked first (:mod:`network`), and an
unreachable Hub stops the job at once with the two ways to supply the weights offline. That first
check (:func:`check_available`) needs neither torch nor timm, whose imports take seconds.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import network
from ..errors import InputError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# The files timm looks for in a Hub repository, in its order of preference.
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass(frozen=True)
class WeightSource:
    """Where timm fetches a tag's weights: a Hugging Face repository (``repo``, at ``revision``)
    or a plain URL."""

    tag: str
    repo: str | None = None
    revision: str | None = None
    files: tuple[str, ...] = HUB_FILES
    url: str | None = None

    @classmethod
    def of(cls, tag: str) -> WeightSource:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(tag)
        if cfg is None:
            raise InputError(f"'{tag}' is not a pretrained tag of timm: see timm.list_pretrained().")
        if cfg.hf_hub_id:
            repo, _, revision = cfg.hf_hub_id.partition("@")
            files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else HUB_FILES
            return cls(tag, repo=repo, revision=revision or None, files=files)
        if cfg.url:
            return cls(tag, url=cfg.url, files=(Path(urllib.parse.urlsplit(cfg.url).path).name,))
        raise InputError(f"timm has no download source for the weights {tag}.")

    @classmethod
    def on_hub(cls, tag: str) -> WeightSource:
        """Where timm keeps the weights of (almost) every tag, without importing timm: the Hub
        repository ``timm/<tag>``."""
        return cls(tag, repo=f"timm/{tag}")

    @property
    def download_url(self) -> str:
        """The URL of the first file timm asks for."""
        if self.repo is None:
            return self.url
        return f"{network.huggingface_endpoint()}/{self.repo}/resolve/{self.revision or 'main'}/{self.files[0]}"

    def cached(self, cache_dir: str | os.PathLike | None) -> Path | None:
        """The weights file in ``cache_dir`` if it is there (the Hub's cache layout for a
        repository, the file itself for a URL)."""
        if cache_dir is None:
            return None
        cache_dir = Path(cache_dir)
        if self.repo is None:
            path = cache_dir / self.files[0]
            return path if path.is_file() else None
        repo_dir = cache_dir / f"models--{self.repo.replace('/', '--')}"
        ref = repo_dir / "refs" / (self.revision or "main")
        commit = ref.read_text().strip() if ref.is_file() else self.revision
        if not commit:
            return None
        for name in self.files:
            path = repo_dir / "snapshots" / commit / name
            if path.is_file():
                return path
        return None


def offline_help(source: WeightSource, name: str, cache_dir: str | os.PathLike, finetune: bool = False) -> str:
    """The two ways to supply the weights of ``source`` without network, for model ``name``."""
    file = source.files[0]
    if finetune:
        first = (
            f"give the authors' fine-tuned checkpoint instead (no fine-tuning then, docs/paper.md):\n"
            f"       models.{name}.weights.path: /path/to/vit_base_patch16_224-CIFAR100.pt"
        )
    else:
        first = (
            f"download {source.download_url} on a machine with network, and give the file in the config:\n"
            f"       models.{name}.weights: {{source: file, path: /path/to/{file}}}"
        )
    if source.repo is not None:
        fill = f"hf download {source.repo} {file} --cache-dir {cache_dir}"
        if source.revision:
            fill += f" --revision {source.revision}"
    else:
        fill = f"download {source.download_url} into {cache_dir}/"
    return (
        f"Without network, either\n"
        f"  1. {first}\n"
        f"  2. or fill the weight cache (config weights_cache: {cache_dir}) on a machine with network and copy "
        f"that folder here:\n"
        f"       {fill}\n"
        f"     (or run this preflight there); weights found there are read without network."
    )


def unavailable(
    source: WeightSource, name: str, cache_dir: str | os.PathLike, finetune: bool, reason: str
) -> InputError:
    """The error of weights that are neither in the cache nor reachable: the tag, its file, why,
    and the offline remedies."""
    what = f"models.{name} needs the timm weights {source.tag}" + (
        " (the start of its fine-tuning)" if finetune else ""
    )
    where = f"file {source.files[0]} of the Hugging Face repository {source.repo}" if source.repo else source.url
    return InputError(
        f"{what}: {where}, not in the weight cache {cache_dir}, but {reason}.\n"
        + offline_help(source, name, cache_dir, finetune)
    )


def reachable_or_cached(source: WeightSource, name: str, cache_dir: str | os.PathLike, finetune: bool) -> Path | None:
    """The cached weights file, or None when the host to download them from answers; raises
    :func:`unavailable` otherwise."""
    cached = source.cached(cache_dir)
    if cached is not None:
        return cached
    url = source.download_url
    try:
        if source.repo is not None and network.hub_offline():
            raise network.Unreachable(url, urllib.parse.urlsplit(url).hostname, "HF_HUB_OFFLINE is set")
        network.require(url)
    except network.Unreachable as err:
        raise unavailable(source, name, cache_dir, finetune, f"{err.host} is unreachable ({err.reason})") from None
    return None


def check_available(name: str, tag: str, cache_dir: str | os.PathLike, finetune: bool = False) -> None:
    """Fail in seconds, before torch and timm are imported, when the weights of ``tag`` are
    neither in the weight cache nor downloadable (assuming the Hub repository ``timm/<tag>``;
    :func:`load_timm_weights` then checks timm's own source)."""
    reachable_or_cached(WeightSource.on_hub(tag), name, cache_dir, finetune)


def load_timm_weights(
    spec, name: str, tag: str, cache_dir: str | os.PathLike, finetune: bool = False, **overrides
) -> torch.nn.Module:
    """:func:`building.timm_pretrained` from the weight cache without network when the cache has
    the weights, else from the network after checking that its host answers. Offline, this
    raises an :class:`InputError` at once naming the tag, its file and the offline remedies
    (:func:`offline_help`), and records the host as unreachable for the run's other jobs."""
    from . import building  # torch and timm

    source = WeightSource.of(tag)
    cached = reachable_or_cached(source, name, cache_dir, finetune)
    if cached is not None:
        log.info("%s: read from the weight cache, %s", tag, cached)
        return building.timm_pretrained(spec, name, tag, cache_dir, file=cached, **overrides)
    try:
        return building.timm_pretrained(spec, name, tag, cache_dir, **overrides)
    except Exception as err:  # timm and huggingface_hub raise many types; only a failed connection is handled
        reason = network.unreachable_reason(err)
        if reason is None:
            raise
        network.mark_unreachable(source.download_url, reason)
        error = unavailable(source, name, cache_dir, finetune, f"the download failed ({reason})")
    raise error
