"""trainstack's Pulumi components: one ComponentResource per module, composed by __main__.py.

Importing this package is cheap on purpose: Helm runs components.webhook_patch as a post-renderer.
"""
