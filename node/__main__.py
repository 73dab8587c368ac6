from node.cli import main
import sys

sys.exit(main())
