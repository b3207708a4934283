"""Integrations with other software: ``contrib.gunicorn`` (server hooks) and
``contrib.django`` (a cache backend).  Each is imported only by its user;
``import dictdb_shm`` imports neither, and neither framework is a dependency
of the package."""
