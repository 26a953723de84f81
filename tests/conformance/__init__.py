"""The provider conformance suite: one set of tests, run against every registered harness.

A harness (:class:`conformance.harness.Harness`) puts one provider, or one cloud's emulators,
behind the suite; every module in ``tests/conformance/harnesses/`` is imported and registers
its harnesses, so adding a provider means adding a file there, never editing the tests.
"""
