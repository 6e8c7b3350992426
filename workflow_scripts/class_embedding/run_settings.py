"""What a rule's params hold: only what determines its output, in one canonical form.

Snakemake reruns a job when the ``repr`` of one of its params changes. Two kinds of config
values must therefore stay out of params, or be written the same way whatever the YAML looked
like:

- the order of a mapping's keys (YAML mappings have none): :func:`canonical` sorts them;
- settings that change how a job runs but not what it writes (batch sizes, the device, data
  loader workers, a memory budget that only chunks the work): :data:`RUN_SETTINGS`. Rules pass
  the rest of their section (:func:`result_settings`); a job reads the whole section back with
  :func:`job_settings`, the run settings from the config it was started with.

No torch here: the rules import it when they are parsed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# config section -> its keys that are resources, not results
RUN_SETTINGS: dict[str, tuple[str, ...]] = {
    "extraction": ("batch_size", "device", "workers"),
    "probing": ("batch_size", "memory_gb"),
    "explainability": ("batch_size", "tokens_per_batch"),
}

# Keys of a model's entry that only label it in figures, tables and pages.
PRESENTATION_KEYS = ("display_name",)


def canonical(value: Any) -> Any:
    """``value`` with the keys of every mapping in it sorted (lists keep their order)."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value, key=str)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def result_settings(config: Mapping, section: str) -> dict:
    """A config section without its run settings: what a rule passes as params."""
    run = RUN_SETTINGS.get(section, ())
    return canonical({key: value for key, value in config[section].items() if key not in run})


def compute_spec(spec: Mapping) -> dict:
    """A model's entry without what only labels it: the params of jobs that compute from it."""
    return canonical({key: value for key, value in spec.items() if key not in PRESENTATION_KEYS})


def job_settings(job, section: str) -> dict:
    """The whole ``section`` of a running Snakemake job: its params (``job.params[section]``)
    and the run settings from the job's config."""
    settings = dict(getattr(job.params, section))
    config = job.config[section]
    settings.update({key: config[key] for key in RUN_SETTINGS.get(section, ()) if key in config})
    return settings
