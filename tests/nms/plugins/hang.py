"""A plugin that hangs: it reads its input, starts a child that sleeps too, and never answers.

Usage: hang.py PIDFILE. It writes its own pid and its child's, one a line, so that a test can
check that both are gone after the pool killed the plugin's process group.
"""

import os
import subprocess
import sys
import time

sys.stdin.buffer.read()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1], "w") as pidfile:
    pidfile.write(f"{child.pid}\n")
    pidfile.write(f"{os.getpid()}\n")
time.sleep(600)
