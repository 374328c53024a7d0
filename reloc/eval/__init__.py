"""Evaluation: results files (``results``), the localization protocol (``metrics``), reports."""
