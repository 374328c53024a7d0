"""Pipeline graph: stage registry, YAML loading and validation, execution with cache, runner."""
