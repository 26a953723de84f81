"""The model server: one ASGI app with every cloud's container routes, batching onto torch.

This is the only part of the ``aiaas`` package that imports torch.
"""
