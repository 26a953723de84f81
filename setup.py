"""setuptools' package list (all metadata lives in pyproject.toml).

The wheel holds the import packages ``aiaas``, ``adapters``, ``functions`` and ``emulators``
(the emulated clouds, ``aiaas emulate``; their SDKs come with the ``emulate`` extra), the
repository's top-level ``templates/`` folder as ``aiaas/templates/``, and the infrastructure
templates of ``iac/<cloud>/`` as ``aiaas/iac/<cloud>/`` (without ``iac/``'s workflow, which
runs from a source tree, nor its checkers and schemas, which only ``make iac-check`` in a
checkout uses); found at run time by :func:`aiaas.template_files.templates_dir` and
:func:`~aiaas.template_files.iac_dir`.
pyproject.toml alone cannot map a folder into a package that ``find`` discovers, hence this
file.
"""

from setuptools import find_namespace_packages, setup  # type: ignore[import-untyped]

IMPORT_PACKAGES = ["aiaas*", "adapters*", "functions*", "emulators*"]
TEMPLATE_PACKAGES = [
    "aiaas." + name for name in find_namespace_packages(include=["templates", "templates.*"])
]

# Each cloud's folder of iac/ on its own: iac/ itself holds scripts that must not ship.
IAC_FOLDERS = ("aws", "azure", "alibaba")
IAC_PACKAGES = {f"aiaas.iac.{folder}": f"iac/{folder}" for folder in IAC_FOLDERS}

setup(
    packages=find_namespace_packages(include=IMPORT_PACKAGES) + TEMPLATE_PACKAGES + [*IAC_PACKAGES],
    package_dir={"aiaas.templates": "templates", **IAC_PACKAGES},
)
