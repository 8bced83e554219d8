"""A plugin whose JSON does not have the contract's shape: success is a string, data is missing."""

import json
import sys

document = json.load(sys.stdin)
results = [{"request_id": task["request_id"], "success": "yes"} for task in document["tasks"]]
print(json.dumps({"results": results}))
