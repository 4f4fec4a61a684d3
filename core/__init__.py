"""The shared core: settings, database and migrations, tables, the campaign spec, signed tokens.

The bottom room: every other package imports it, and it imports nothing of the project.
"""
