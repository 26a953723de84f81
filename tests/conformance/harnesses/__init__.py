"""One module per provider: each registers its :class:`conformance.harness.Harness`.

Adding a provider to the conformance suite is adding a module here; see ``local.py`` and
docs/providers.md ("Conformance suite").
"""
