"""Checkpoints that resume at any world size and ZeRO stage, written in the background (after torchtitan's
checkpointer). Imports: layout <- local, s3 (s3_lease) <- storage <- store; only store imports torch at import time."""
