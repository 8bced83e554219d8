"""Every write Census makes to the network-monitoring domain goes through a function here.

Celery tasks, management commands, admin actions and API views parse their input, call one of
these, and report.
"""
