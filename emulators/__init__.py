"""The emulated clouds: rehearse a deploy with no account (``aiaas emulate aws|azure``).

Real SDK clients talk to them on 127.0.0.1: moto's server for AWS's control plane, with
SageMaker's endpoint lifecycle added (:mod:`emulators.aws`), and a SigV4-verifying SageMaker
runtime (:mod:`emulators.sagemaker_runtime`); ARM and Azure ML over TLS
(:mod:`emulators.azure`), each endpoint's scoring host (:mod:`emulators.azure_scoring`), the
managed-identity endpoint (:mod:`emulators.identity`) and Azurite for Blob storage
(:mod:`emulators.azurite`); every endpoint runs the real model server
(:mod:`emulators.fleet`). The shared toolkit: a container fleet, faults and call records
(:mod:`emulators.faults`), an HTTP(S) server base (:mod:`emulators.httpserver`). They know
nothing of aiaas's provider code; they emulate the cloud, and each module names every gap
between it and the real service. The tests use the same code. Install with
``pip install 'aiaas[emulate]'``.
"""
