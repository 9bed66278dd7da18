"""Database: engine, unit of work, schema and migrations."""
