"""Hydra configuration tree (YAML files). A package only so that a wheel ships it beside worldflow/."""
