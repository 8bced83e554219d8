import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_wsgi_application()

if settings.CENSUS_IN_PROCESS_WORKER:
    # The embedded default has no worker processes: the web process runs the sessions it starts,
    # and resumes those left active, in a thread. (Started here, in each process that serves:
    # runserver's, or every gunicorn worker, which imports this module after the fork.)
    from enumeration.services.inprocess import background_worker_start

    background_worker_start()
