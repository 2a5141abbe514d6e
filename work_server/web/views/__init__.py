"""Handlers of the web pages, one module per area; each has ``setup_routes(app)``.

Handlers only translate between HTTP and the services: they read the request, call
``work_server.services`` (or the read-only ``web.queries``), and render a template or
redirect. ``work_server.web.setup_web`` composes them.
"""
