"""A plugin that answers only its first task, and adds a result nobody asked for."""

import json
import sys

document = json.load(sys.stdin)
first = document["tasks"][0]
results = [
    {"request_id": first["request_id"], "success": True, "error": None, "data": {"hostname": "a"}},
    {"request_id": "nobody-asked", "success": True, "error": None, "data": {"hostname": "b"}},
]
print(json.dumps({"results": results}))
