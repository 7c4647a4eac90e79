"""Packaging: the one thing pyproject.toml cannot say on its own.

The shipped YAML configs stay in the top-level ``configs/`` folder of the repository (where users read and
copy them), and are installed inside the package as ``emotalk.configs`` so that a regular (non-editable)
``pip install .`` can run ``emotalk train --config landmark/tiny`` or ``emotalk demo`` from any folder.
``[tool.setuptools] packages = {find = ...}`` cannot add a package that lives outside the package folder,
hence this file; everything else (metadata, dependencies, scripts) is in pyproject.toml.
"""
from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["emotalk", "emotalk.*"]) + ["emotalk.configs"],
    package_dir={"emotalk.configs": "configs"},
    package_data={"emotalk": ["assets/*.json"], "emotalk.configs": ["*/*.yaml"]},
)
