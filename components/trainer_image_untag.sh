#!/usr/bin/env bash
# Removes the trainer image's tag from the local Docker engine: the delete of components/trainer_image.py's
# untag command, run on `pulumi destroy` and when a new tag replaces this one (pulumi-docker's Image leaves
# the local image in place). The base image and the build cache stay (docs/stack.md says how to remove them).
# Environment: IMAGE, repository:tag.
docker image rm --force "$IMAGE" >/dev/null 2>&1 || true
