"""The database, ground floor: engines for SQLite and PostgreSQL and the nesting unit of work
(``engine``), the declarative base and column types (``base``), installation facts
(``meta``), and one LISTEN connection for every NOTIFY channel (``notify``). The tables of the
domains and their migrations are in ``cairn.migrations``."""
