"""trainstack's Pulumi components, one per module, composed by __main__.py. Cheap to import on purpose:
Helm runs components.webhook_patch as a post-renderer."""
