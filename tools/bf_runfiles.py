"""Shared by the docs tools (converged-report, search-cost): where a
training of a search lives. Not a tool itself; the product needs no Python."""
import os
import sys


def run_path(tool, sdir, run_dir):
    """A training's directory: SEARCH_DIR/runs/NAME when it exists (a live
    search, or a committed copy made by tools/search-summary, whose
    search.jsonl still names the directories of the machine it ran on),
    else search.jsonl's run_dir (a search given an outside baseline)."""
    local = os.path.join(sdir, "runs", os.path.basename(run_dir.rstrip("/")))
    if os.path.isdir(local):
        return local
    if os.path.isdir(run_dir):
        return run_dir
    sys.exit("%s: %s: no such run (nor %s)" % (tool, run_dir, local))
