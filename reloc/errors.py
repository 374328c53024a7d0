"""Errors reloc reports to users. Each message names the file, node or key at fault."""


class RelocError(Exception):
    """Base class: the CLI prints these as a one-line message instead of a traceback."""


class DatasetError(RelocError):
    """A dataset file is missing, malformed or inconsistent."""


class PipelineError(RelocError):
    """A pipeline YAML is invalid: unknown stage or key, bad wiring, cycle."""


def require_range(
    config: object, key: str, low: float | None = None, high: float | None = None, above: float | None = None
):
    """Raise ValueError naming ``key`` when ``config.key`` is outside [low, high] (or not above
    ``above``); configs call it in ``__post_init__`` and the pipeline loader reports the node."""
    value = getattr(config, key)
    if (
        (low is not None and value < low)
        or (high is not None and value > high)
        or (above is not None and value <= above)
    ):
        bounds = " and ".join(
            text
            for bound, text in ((low, f">= {low}"), (above, f"> {above}"), (high, f"<= {high}"))
            if bound is not None
        )
        raise ValueError(f"config key '{key}' must be {bounds}, got {value!r}")


class ResultsError(RelocError):
    """A results file is malformed or does not match the dataset."""
