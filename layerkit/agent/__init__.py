"""Code that runs inside layerkit's containers.

Standard library (plus Jinja2 in the load balancer) only: it is copied into the images and must
never import `docker`. It is importable on the host so its logic is tested there too.
"""
