"""Every write Census makes to the enumeration domain goes through a function here.

Celery tasks, management commands, admin actions and API views parse their input, call one of
these, and report.
"""
