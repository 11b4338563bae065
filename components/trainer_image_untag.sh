#!/usr/bin/env bash
# Removes the local tag IMAGE (pulumi-docker's delete leaves it); base image and build cache stay.
docker image rm --force "$IMAGE" >/dev/null 2>&1 || true
