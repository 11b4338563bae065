"""trainstack's GPT pre-training package: `python -m trainer train --config FILE`. Importing it is cheap (no
torch): the Pulumi program imports trainer.config."""

# Stopped on SIGTERM after saving (EX_TEMPFAIL): non-zero so an unfinished job never looks complete; a restart resumes.
PREEMPTED_EXIT_CODE = 75
USAGE_EXIT_CODE = 2  # bad config or data (one line on stderr)
# where each rank leaves its exit code for `launch`: torchrun reports only exit 1 whatever its workers exited with
STATUS_DIR_ENV = "TRAINSTACK_STATUS_DIR"
# torchrun's wait from SIGTERM to SIGKILL of its workers (30 s unset); the stack matches the pod's grace period
SHUTDOWN_TIMEOUT_ENV = "TORCH_ELASTIC_SHUTDOWN_TIMEOUT"
