"""A plugin that prints something that is not JSON, and exits 0."""

import sys

sys.stdin.read()
print("Loading modules... done")
print("{'results': [this is not JSON")
