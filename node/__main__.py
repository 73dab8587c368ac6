import sys

from node.cli import main

# The guard matters: sync checks ops in a "spawn" process (node/sync.py), which imports the main
# module of `python -m node` again under another name.
if __name__ == "__main__":
    sys.exit(main())
