"""Configuration both processes read: the shared file's reader and the sections they share.

The gateway never imports ``service/``, and this package imports neither, so
both can depend on it.
"""
