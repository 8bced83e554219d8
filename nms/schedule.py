"""The network monitor's periodic jobs (installed by ``config.periodic``)."""

PERIODIC_JOBS: tuple = ()
