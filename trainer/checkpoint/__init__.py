"""Checkpoints that resume at any world size and ZeRO stage, written in the background, counted only once
complete (the package's shape follows torchtitan's components/checkpointer/). Imports go one way:

    layout   names, manifest, the rules that verify them, the Storage protocol      (no torch)
    local    LocalStorage: a directory, published by rename(2)                      (no torch)
    s3       S3Storage: s3://bucket/prefix, published by a conditional PUT          (no torch)
    s3_lease its RunLock: a lease object rank 0 keeps fresh                         (no torch)
    storage  open_storage and the look at checkpoint.dir before a run               (no torch)
    store    CheckpointStore: the background writer and the loader                  (torch)

`launch` reads manifests before any torch import, so only `store` imports torch (and the stores only where a
shard is written or read); this file imports nothing.
"""
