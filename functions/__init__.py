"""The function tier: one ASGI app in front of a provider, thin per-platform entrypoints.

Never imports torch, transformers or an unused cloud SDK.
"""
