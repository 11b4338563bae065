import os
import sys

from trainer.cli import main

code = main()
sys.stdout.flush()
sys.stderr.flush()
# Exit without running C++ static destructors: with ZeRO on CPU a gloo/DeepSpeed helper thread is sometimes
# still joinable at interpreter teardown and std::terminate aborts the process (exit -6) after the run has
# finished and its checkpoint is published, turning success into a failure for torchrun and Kubernetes.
os._exit(code)
