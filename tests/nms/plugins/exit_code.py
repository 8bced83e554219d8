"""A careless plugin: it echoes its whole input (credentials included) to stderr, writes a result
document that looks right, and exits with the code given as its argument.

Usage: exit_code.py CODE
"""

import json
import sys

document = json.loads(sys.stdin.read())
print(f"debug: got {json.dumps(document)}", file=sys.stderr)
results = [
    {"request_id": task["request_id"], "success": True, "error": None, "data": {"hostname": "x"}}
    for task in document["tasks"]
]
print(json.dumps({"results": results}))
sys.exit(int(sys.argv[1]))
