"""Shared by the docs tools (converged-report, search-cost): reading a
search's run files, and where a training of a search lives. Not a tool
itself; the product needs no Python."""
import json
import os
import sys


def load(tool, path, lines=False):
    """A JSON file, or a JSON-lines file's rows; a missing or malformed file
    ends the tool with one message naming it."""
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip()] if lines else json.load(f)
    except (OSError, ValueError) as e:
        sys.exit("%s: %s: %s" % (tool, path, e))


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
