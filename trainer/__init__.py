"""trainstack's GPT pre-training package: `python -m trainer train --config FILE`.

Importing the package is cheap (no torch): the Pulumi program imports trainer.config from it.
"""

# Exit status of a run that stopped on SIGTERM after saving a checkpoint (EX_TEMPFAIL: try again later).
# Non-zero so an unfinished job never looks complete to Kubernetes; its restart resumes.
PREEMPTED_EXIT_CODE = 75

# Exit status for a bad config or bad data (one clear line on stderr).
USAGE_EXIT_CODE = 2

# Set by `python -m trainer launch` for its workers: each rank leaves its exit code there, since torchrun
# reports only "failed" (exit 1) whatever its workers exited with.
STATUS_DIR_ENV = "TRAINSTACK_STATUS_DIR"

# torchrun's wait between forwarding SIGTERM to its workers and SIGKILLing them, in seconds: `launch` passes it
# as torch.distributed.run --shutdown-timeout (torch >= 2.11; the option's own fallback variable, 30 s without).
# The stack sets it to match the pod's terminationGracePeriodSeconds.
SHUTDOWN_TIMEOUT_ENV = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"

__all__ = ["PREEMPTED_EXIT_CODE", "SHUTDOWN_TIMEOUT_ENV", "STATUS_DIR_ENV", "USAGE_EXIT_CODE"]
