"""``netspec dashboard``: a local web page that follows training runs as their logs grow.

``app.create_app(roots)`` is the Starlette app; ``runs`` reads run folders.  Nothing else in
netspec imports this package (its server is the optional ``[dashboard]`` extra).
"""
