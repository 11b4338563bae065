"""Is the Python running this one trainstack supports? The first step of every make target that makes the
virtualenv or runs the stack (`$(PYTHON) scripts/python_check.py`): silent and exit 0 when it is, else one line
and exit 1.

Written so that any Python parses it (no f-strings, annotations or `from __future__ import annotations`): an old
$(PYTHON) gets this line rather than a SyntaxError from scripts/check_prereqs.py, which imports it.
"""

import sys

SUPPORTED_PYTHON = ((3, 11), (3, 14))


def python_problem(version=None):  # type: (tuple[int, ...] | None) -> str | None
    """Why this Python cannot run trainstack's pins, or None."""
    version = tuple(sys.version_info[:3]) if version is None else version
    low, high = SUPPORTED_PYTHON
    if low <= tuple(version[:2]) <= high:
        return None
    needs = ".".join(str(part) for part in low) + " to " + ".".join(str(part) for part in high)
    return (  # concatenated: f-strings do not parse on an old Python
        sys.executable + " is Python " + ".".join(str(part) for part in version[:3]) + "; trainstack needs "
        "Python " + needs + " (its pinned packages install on no other): install one (Ubuntu 22.04: apt-get "
        "install python3.11-venv) and pass it, e.g. make up PYTHON=python3.11"
    )


if __name__ == "__main__":
    problem = python_problem()
    if problem is not None:
        print("error: " + problem)
        sys.exit(1)
