"""setuptools' package list (all metadata lives in pyproject.toml).

The wheel holds the import packages ``aiaas``, ``adapters``, ``functions`` and ``emulators``
(the emulated clouds, ``aiaas emulate``; their SDKs come with the ``emulate`` extra), and the
repository's top-level ``templates/`` folder as ``aiaas/templates/`` (found at run time by
:func:`aiaas.template_files.templates_dir`). pyproject.toml alone cannot map a folder into a
package that ``find`` discovers, hence this file.
"""

from setuptools import find_namespace_packages, setup  # type: ignore[import-untyped]

IMPORT_PACKAGES = ["aiaas*", "adapters*", "functions*", "emulators*"]
TEMPLATE_PACKAGES = [
    "aiaas." + name for name in find_namespace_packages(include=["templates", "templates.*"])
]

setup(
    packages=find_namespace_packages(include=IMPORT_PACKAGES) + TEMPLATE_PACKAGES,
    package_dir={"aiaas.templates": "templates"},
)
