"""Checkpoints that resume at any world size and ZeRO stage, written in the background, counted only once
complete (shaped after torchtitan components/checkpointer/). Imports go one way: layout <- local, s3 (s3_lease)
<- storage <- store; only store imports torch, as `launch` reads manifests before any torch import."""
