"""Errors reloc reports to users. Each message names the file, node or key at fault."""


class RelocError(Exception):
    """Base class: the CLI prints these as a one-line message instead of a traceback."""


class DatasetError(RelocError):
    """A dataset file is missing, malformed or inconsistent."""


class PipelineError(RelocError):
    """A pipeline YAML is invalid: unknown stage or key, bad wiring, cycle."""


class ResultsError(RelocError):
    """A results file is malformed or does not match the dataset."""
